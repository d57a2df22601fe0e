//! End-to-end tests of the `[realism]` knobs that shape answers (settling, order, forms).
