"""Checks of deploy/ that need more than systemd-analyze: called by .ci/check-deploy.

- Kubernetes: renders deploy/kubernetes with `kubectl kustomize` (placeholder files stand in for
  the git-ignored secrets), validates every rendered resource against the Kubernetes schemas
  (kubernetes-validate --strict) for the oldest and newest supported versions, and checks what a
  schema cannot: the CronJob's safety settings, that every volume, mount and podFailurePolicy
  container refers to something that exists, quantities, and that config.toml's paths point into
  the mounted ConfigMap, Secret and volume.
- The PostgreSQL variant (deploy/kubernetes/postgres), rendered and validated the same way: an
  Indexed Job with completions = parallelism = config.toml's [runtime] shards (no fixed shard), no
  PersistentVolumeClaim or other persistent volume, the password file a key of the mounted Secret
  and no password in the URL, and otherwise the base's CronJob, inventory, config and Secret keys.
- systemd: both services load the same credentials and map each to a *_FILE variable of a
  configured account; stop timeouts exceed shutdown_grace.
- The configs use only keys documented in config/example.toml (issue 17's new keys accepted until
  it documents them: PENDING_KEYS).
- With a built binary (--binary): each shipped config passes `engagement-ingest check` as the
  deployment lays it out, and the command lines of the units and the CronJob parse. The
  PostgreSQL variant's config only with $ENGAGEMENT_INGEST_TEST_PG (a server URL): on a new
  database there, its URL in place of the shipped one, once per JOB_COMPLETION_INDEX; without the
  variable the step is reported as skipped.
- Prometheus alert rules (deploy/prometheus/): the structure of every rule (alert, expr, for,
  labels.severity, annotations.summary and description), that every metric an expression or a
  test's input series names is one the program exports, that templates use only labels those
  metrics carry, and that the tests fire and stay silent at least once for every alert. promtool
  (run by check-deploy when it can be installed) checks the PromQL and runs the tests; these
  checks cover what it does not, and are all there is without it.

Prints what it checked; exits 1 listing every problem.
"""

from __future__ import annotations

import argparse
import base64
import copy
import difflib
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

try:
    import tomllib
except ImportError:  # Python < 3.11
    sys.exit("check_deploy.py needs Python 3.11 or newer (tomllib)")

import yaml

# Oldest Kubernetes with podFailurePolicy GA (1.31) and the newest the schemas package knows.
K8S_VERSIONS = ["1.31.0", "1.37.0"]
PROBLEMS: list[str] = []


def problem(msg: str) -> None:
    PROBLEMS.append(msg)
    print(f"  FAIL {msg}")


def ok(msg: str) -> None:
    print(f"  ok   {msg}")


def duration_seconds(text: str) -> float:
    """'20s', '2min', '1h30min', '500ms' (TOML config and systemd time spans)."""
    units = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
    total, pos = 0.0, 0
    for m in re.finditer(r"\s*(\d+)\s*(ms|sec|min|s|m|h|d)?", text):
        if m.start() != pos:
            raise ValueError(text)
        total += int(m.group(1)) * units[m.group(2) or "s"]
        pos = m.end()
    if pos != len(text) or pos == 0:
        raise ValueError(text)
    return total


# --- config keys -------------------------------------------------------------------------------

KEY_LINE = re.compile(r"^#?\s?([a-z_][a-z0-9_]*)\s*=\s*(.*)$")
TABLE_LINE = re.compile(r"^#?\s?(\[\[?)([a-z_.]+)\]\]?\s*(#.*)?$")


def documented_keys(example: Path) -> set[str]:
    """Dotted keys of config/example.toml, commented-out ones included ('accounts[].handle')."""
    keys: set[str] = set()
    section = None
    for raw in example.read_text().splitlines():
        line = raw.strip()
        t = TABLE_LINE.match(line)
        if t:
            section = t.group(2) + ("[]" if t.group(1) == "[[" else "")
            continue
        k = KEY_LINE.match(line)
        if not k or section is None:
            continue
        key = f"{section}.{k.group(1)}"
        keys.add(key)
        try:
            value = tomllib.loads(f"x = {k.group(2)}")["x"]
        except tomllib.TOMLDecodeError:
            continue
        if isinstance(value, dict):
            keys.update(f"{key}.{sub}" for sub in value)
    return keys


def used_keys(config: dict, prefix: str = "") -> set[str]:
    out: set[str] = set()
    for k, v in config.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict):
            out |= used_keys(v, path + ".")
        elif isinstance(v, list) and v and all(isinstance(i, dict) for i in v):
            for item in v:
                out |= used_keys(item, path + "[].")
        else:
            out.add(path)
    return out


# Issue 17's keys, which the program learns together with the PostgreSQL overlay that uses them:
# accepted while config/example.toml does not document them yet (said so in the output), checked
# like every other key once it does. Empty this set then.
PENDING_KEYS: set[str] = set()


def check_keys(name: str, config: dict, documented: set[str]) -> None:
    unknown = sorted(k for k in used_keys(config) if k not in documented)
    pending = [k for k in unknown if k in PENDING_KEYS]
    unknown = [k for k in unknown if k not in PENDING_KEYS]
    if unknown:
        problem(f"{name}: keys not documented in config/example.toml: {', '.join(unknown)}")
    elif pending:
        ok(f"{name}: every key is documented in config/example.toml but issue 17's {', '.join(pending)} "
           "(not yet there: accepted for now)")
    else:
        ok(f"{name}: every key is documented in config/example.toml")


# --- systemd -----------------------------------------------------------------------------------


def parse_unit(path: Path) -> list[tuple[str, str, str]]:
    """(section, key, value) in file order; comments and blank lines dropped."""
    out, section = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def unit_values(unit: list[tuple[str, str, str]], key: str) -> list[str]:
    return [v for _, k, v in unit if k == key]


def unit_env(unit: list[tuple[str, str, str]]) -> dict[str, str]:
    env = {}
    for value in unit_values(unit, "Environment"):
        for assignment in shlex.split(value):
            name, _, val = assignment.partition("=")
            env[name] = val
    return env


def check_systemd(repo: Path, documented: set[str]) -> dict:
    print("systemd units and config")
    d = repo / "deploy/systemd"
    daemon = parse_unit(d / "engagement-ingest.service")
    oneshot = parse_unit(d / "engagement-ingest-run.service")
    config = tomllib.loads((d / "config.toml").read_text())
    check_keys("deploy/systemd/config.toml", config, documented)
    before = len(PROBLEMS)

    creds = {}
    for name, unit in [("engagement-ingest.service", daemon), ("engagement-ingest-run.service", oneshot)]:
        loaded = {}
        for v in unit_values(unit, "LoadCredential") + unit_values(unit, "LoadCredentialEncrypted"):
            cid, _, src = v.partition(":")
            loaded[cid] = src
        env = unit_env(unit)
        files = {k: v for k, v in env.items() if k.startswith("ENGAGEMENT__") and k.endswith("_FILE")}
        for var, val in sorted(files.items()):
            m = re.fullmatch(r"%d/(.+)", val)
            if not m:
                problem(f"{name}: {var}={val} does not point into the credentials directory (%d/NAME)")
            elif m.group(1) not in loaded:
                problem(f"{name}: {var} names credential {m.group(1)!r}, which no LoadCredential= loads")
        unused = set(loaded) - {v[3:] for v in files.values() if v.startswith("%d/")}
        for cid in sorted(unused):
            problem(f"{name}: LoadCredential={cid} is not used by any ENGAGEMENT__…_FILE variable")
        handles = {a["handle"].lstrip("@").lower() for a in config.get("accounts", [])}
        for var in files:
            m = re.fullmatch(r"ENGAGEMENT__ACCOUNTS__(.+)__ACCESS_TOKEN(_SECRET)?_FILE", var)
            if m and m.group(1).lower() not in handles:
                problem(f"{name}: {var}: config.toml has no [[accounts]] handle {m.group(1).lower()!r}")
        if env.get("ENGAGEMENT_CONFIG") != "/etc/engagement-ingest/config.toml":
            problem(f"{name}: ENGAGEMENT_CONFIG should be /etc/engagement-ingest/config.toml")
        grace = duration_seconds(config.get("runtime", {}).get("shutdown_grace", "20s"))
        stop = unit_values(unit, "TimeoutStopSec")
        if not stop or duration_seconds(stop[-1]) <= grace:
            problem(f"{name}: TimeoutStopSec must exceed [runtime] shutdown_grace ({grace:g}s)")
        creds[name] = (loaded, files, env)
    (l1, f1, _), (l2, f2, _) = creds.values()
    if (l1, f1) != (l2, f2):
        problem("the two services' LoadCredential=/ENGAGEMENT__…_FILE lists differ; keep them identical")
    for key in ["database", "inventory"]:
        path = config.get(key, {}).get("path", "")
        if not path.startswith("/"):
            problem(f"deploy/systemd/config.toml: [{key}] path must be absolute, is {path!r}")
    if len(PROBLEMS) == before:
        ok("credentials: each LoadCredential= feeds one *_FILE variable of a configured account, same in both services")
        ok("stop timeouts exceed shutdown_grace; config paths are absolute")
    return {"daemon": daemon, "oneshot": oneshot, "creds": creds}


# --- Kubernetes --------------------------------------------------------------------------------

QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[numkMGTPE]|[KMGTPE]i)?$")


def render_kustomization(repo: Path, work: Path, kubectl: str, rel: str) -> list[dict]:
    """Renders the kustomization at `rel` (deploy/kubernetes or below) from a copy of
    deploy/kubernetes in `work`, with placeholder files for the git-ignored secrets."""
    dst_root = work / "kubernetes"
    if not dst_root.exists():
        shutil.copytree(repo / "deploy/kubernetes", dst_root)
    dst = dst_root / Path(rel).relative_to("deploy/kubernetes")
    kz = yaml.safe_load((dst / "kustomization.yaml").read_text())
    for gen in kz.get("secretGenerator", []):
        for f in gen.get("files", []):
            path = dst / f.split("=", 1)[-1]
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(f"placeholder-{path.name}\n")
    r = subprocess.run([kubectl, "kustomize", str(dst)], capture_output=True, text=True)
    if r.returncode != 0:
        problem(f"kubectl kustomize {rel} failed:\n{r.stderr}")
        return []
    (work / rendered_name(rel)).write_text(r.stdout)
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    ok(f"kustomize rendered {len(docs)} resources: " + ", ".join(f"{d['kind']}/{d['metadata']['name']}" for d in docs))
    return docs


def rendered_name(rel: str) -> str:
    return "rendered" + rel.removeprefix("deploy/kubernetes").replace("/", "-") + ".yaml"


def schema_validate(work: Path, validator: str, rel: str) -> None:
    for version in K8S_VERSIONS:
        r = subprocess.run(
            [validator, "--strict", "--quiet", "-k", version, str(work / rendered_name(rel))],
            capture_output=True, text=True,
        )
        if r.returncode != 0:
            problem(f"{rel}: schema validation against Kubernetes {version}:\n{r.stdout}{r.stderr}")
        else:
            ok(f"every resource validates against the Kubernetes {version} schemas (strict)")


def check_cronjob(docs: list[dict], documented: set[str], label: str = "CronJob") -> dict | None:
    by_kind: dict[str, dict[str, dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    cronjobs = list(by_kind.get("CronJob", {}).values())
    if len(cronjobs) != 1:
        problem(f"{label}: expected one CronJob, found {len(cronjobs)}")
        return None
    cj = cronjobs[0]
    spec = cj["spec"]
    job = spec["jobTemplate"]["spec"]
    pod = job["template"]["spec"]
    before = len(PROBLEMS)

    def expect(cond: bool, msg: str) -> None:
        if not cond:
            problem(f"{label}: {msg}")

    expect(spec.get("concurrencyPolicy") == "Forbid", "concurrencyPolicy must be Forbid (one writer)")
    expect("startingDeadlineSeconds" in spec, "startingDeadlineSeconds missing")
    expect(pod.get("restartPolicy") == "Never", "restartPolicy must be Never (podFailurePolicy needs it)")
    expect(pod.get("automountServiceAccountToken") is False, "automountServiceAccountToken must be false")
    psc = pod.get("securityContext", {})
    expect(psc.get("runAsNonRoot") is True, "pod securityContext.runAsNonRoot must be true")
    expect(psc.get("fsGroup") is not None, "pod securityContext.fsGroup missing (the volume must be writable)")
    expect(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "seccompProfile must be RuntimeDefault")
    containers = {c["name"]: c for c in pod["containers"]}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for c in containers.values():
        sc = c.get("securityContext", {})
        expect(sc.get("readOnlyRootFilesystem") is True, f"{c['name']}: readOnlyRootFilesystem must be true")
        expect(sc.get("allowPrivilegeEscalation") is False, f"{c['name']}: allowPrivilegeEscalation must be false")
        expect(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{c['name']}: capabilities.drop must be [ALL]")
        for kind in ["requests", "limits"]:
            res = c.get("resources", {}).get(kind, {})
            expect({"cpu", "memory"} <= set(res), f"{c['name']}: resources.{kind} needs cpu and memory")
            for k, v in res.items():
                expect(bool(QUANTITY.match(str(v))), f"{c['name']}: resources.{kind}.{k}: {v!r} is not a quantity")
        for m in c.get("volumeMounts", []):
            expect(m["name"] in volumes, f"{c['name']}: volumeMount {m['name']!r} has no volume")
        expect(any(m["mountPath"] == "/tmp" for m in c.get("volumeMounts", [])), f"{c['name']}: /tmp needs a volume (read-only root)")
    for name, v in volumes.items():
        if "configMap" in v:
            expect(v["configMap"]["name"] in by_kind.get("ConfigMap", {}), f"volume {name}: no ConfigMap {v['configMap']['name']!r}")
        if "secret" in v:
            expect(v["secret"]["secretName"] in by_kind.get("Secret", {}), f"volume {name}: no Secret {v['secret']['secretName']!r}")
        if "persistentVolumeClaim" in v:
            claim = v["persistentVolumeClaim"]["claimName"]
            expect(claim in by_kind.get("PersistentVolumeClaim", {}), f"volume {name}: no PersistentVolumeClaim {claim!r}")
    rules = job.get("podFailurePolicy", {}).get("rules", [])
    fail_codes: set[int] = set()
    for rule in rules:
        expect(rule.get("action") in {"FailJob", "Ignore", "Count", "FailIndex"}, f"podFailurePolicy: unknown action {rule.get('action')!r}")
        codes = rule.get("onExitCodes")
        if codes:
            expect(codes.get("operator") in {"In", "NotIn"}, f"podFailurePolicy: operator {codes.get('operator')!r} is not In or NotIn")
            if "containerName" in codes:
                expect(codes["containerName"] in containers, f"podFailurePolicy: no container {codes['containerName']!r}")
            if rule.get("action") == "FailJob" and codes.get("operator") == "In":
                fail_codes |= set(codes.get("values", []))
    expect(2 in fail_codes, "podFailurePolicy must fail the Job at once on exit code 2")
    if len(PROBLEMS) == before:
        ok(f"{label}: Forbid, restartPolicy Never, podFailurePolicy fails the Job on exit codes "
           + ", ".join(map(str, sorted(fail_codes)))
           + "; non-root, read-only root, no privilege escalation, capabilities dropped; references resolve")
    return {"cronjob": cj, "by_kind": by_kind, "containers": containers, "volumes": volumes, "pod": pod,
            "job": job, "documented": documented, "label": label}


def pod_files(k8s: dict) -> tuple[dict, dict[str, dict[str, bytes]]]:
    """The container's mounts: mountPath -> {file name: contents} (ConfigMap, Secret) or {} (other)."""
    (container,) = k8s["containers"].values()
    mounts: dict[str, dict[str, bytes]] = {}
    for m in container.get("volumeMounts", []):
        v = k8s["volumes"][m["name"]]
        files: dict[str, bytes] = {}
        if "configMap" in v:
            cm = k8s["by_kind"]["ConfigMap"][v["configMap"]["name"]]
            files = {k: s.encode() for k, s in cm.get("data", {}).items()}
        elif "secret" in v:
            sec = k8s["by_kind"]["Secret"][v["secret"]["secretName"]]
            files = {k: base64.b64decode(s) for k, s in sec.get("data", {}).items()}
        mounts[m["mountPath"].rstrip("/")] = files
    return container, mounts


def check_k8s_config(k8s: dict, rel: str = "deploy/kubernetes") -> tuple[str, dict[str, dict[str, bytes]], dict, dict] | None:
    """config.toml as the CronJob mounts it. With [database] url (the PostgreSQL overlay) there is
    no database volume; the password file must be a key of the mounted Secret."""
    label = k8s["label"]
    container, mounts = pod_files(k8s)
    args = container.get("args", [])
    if "--config" not in args:
        problem(f"{label}: the container's args must name --config")
        return None
    config_path = args[args.index("--config") + 1]
    mount, _, name = config_path.rpartition("/")
    if name not in mounts.get(mount, {}):
        problem(f"{label}: --config {config_path} is not a file of a mounted ConfigMap")
        return None
    text = mounts[mount][name].decode()
    config = tomllib.loads(text)
    before = len(PROBLEMS)
    check_keys(f"{rel}/config.toml", config, k8s["documented"])

    def file_in_mount(what: str, path: str) -> None:
        m, _, n = path.rpartition("/")
        if m not in mounts:
            problem(f"{rel}/config.toml {what} = {path!r}: nothing is mounted at {m}")
        elif mounts[m] and n not in mounts[m]:
            problem(f"{rel}/config.toml {what} = {path!r}: the volume at {m} has no key {n!r} (has {sorted(mounts[m])})")

    for key, value in config.get("app", {}).items():
        if key.endswith("_file"):
            file_in_mount(f"[app] {key}", value)
    for account in config.get("accounts", []):
        for key, value in account.items():
            if key.endswith("_file"):
                file_in_mount(f"[[accounts]] {account.get('handle')} {key}", value)
    file_in_mount("[inventory] path", config.get("inventory", {}).get("path", ""))
    database = config.get("database", {})
    if "url" in database:
        if "path" in database:
            problem(f"{rel}/config.toml: [database] has both url and path")
        if urlsplit(database["url"]).password is not None:
            problem(f"{rel}/config.toml: [database] url holds a password: use password_file (the Secret)")
        pw = database.get("password_file")
        if pw is None:
            problem(f"{rel}/config.toml: [database] password_file missing (the password is a key of the Secret)")
        else:
            m, _, n = pw.rpartition("/")
            secret_mounts = {
                mm["mountPath"].rstrip("/") for mm in container.get("volumeMounts", [])
                if "secret" in k8s["volumes"][mm["name"]]
            }
            if m not in secret_mounts or n not in mounts[m]:
                problem(f"{rel}/config.toml: [database] password_file = {pw!r} is not a key of a mounted Secret "
                        f"(Secrets mounted at {sorted(secret_mounts)})")
    else:
        db = database.get("path", "")
        db_mount = db.rpartition("/")[0]
        if db_mount not in mounts or mounts[db_mount]:
            problem(f"{rel}/config.toml: [database] path = {db!r}: its directory must be a writable volume mount")
    if "--metrics-file" in args:
        mf = args[args.index("--metrics-file") + 1]
        mf_mount = mf.rpartition("/")[0]
        if mf_mount not in mounts or mounts[mf_mount]:
            problem(f"{label}: --metrics-file {mf}: its directory must be a writable volume mount (read-only root)")
    grace = duration_seconds(config.get("runtime", {}).get("shutdown_grace", "20s"))
    if k8s["pod"].get("terminationGracePeriodSeconds", 30) <= grace:
        problem(f"{label}: terminationGracePeriodSeconds must exceed [runtime] shutdown_grace")
    if len(PROBLEMS) == before:
        ok(f"{rel}/config.toml (from the ConfigMap): secrets, inventory and database point into the mounted "
           + ("Secret and ConfigMap; the password file is a key of the Secret" if "url" in database
              else "Secret, ConfigMap and volume"))
    return config_path, mounts, container, config


# --- the PostgreSQL overlay (deploy/kubernetes/postgres) -----------------------------------------

PG_REL = "deploy/kubernetes/postgres"


def unhashed(name: str) -> str:
    """A generated ConfigMap's or Secret's name without kustomize's hash suffix."""
    return re.sub(r"-[a-z0-9]{10}$", "", name)


def without_hashes(doc: dict) -> dict:
    doc = copy.deepcopy(doc)
    pod = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    for v in pod.get("volumes", []):
        if "configMap" in v:
            v["configMap"]["name"] = unhashed(v["configMap"]["name"])
        if "secret" in v:
            v["secret"]["secretName"] = unhashed(v["secret"]["secretName"])
    return doc


def base_without_database_volume(base_cj: dict, pg_job: dict) -> dict:
    """The base's CronJob as the overlay should render it: no PersistentVolumeClaim volume or its
    mounts, no --metrics-file (it wrote to that volume), no SQLITE_TMPDIR, and the Indexed Job's
    three fields as the overlay has them (checked against [runtime] shards on their own)."""
    cj = without_hashes(base_cj)
    job = cj["spec"]["jobTemplate"]["spec"]
    pod = job["template"]["spec"]
    gone = {v["name"] for v in pod.get("volumes", []) if "persistentVolumeClaim" in v}
    pod["volumes"] = [v for v in pod.get("volumes", []) if v["name"] not in gone]
    for c in pod["containers"]:
        c["volumeMounts"] = [m for m in c.get("volumeMounts", []) if m["name"] not in gone]
        args = c.get("args", [])
        if "--metrics-file" in args:
            i = args.index("--metrics-file")
            del args[i:i + 2]
        env = [e for e in c.get("env", []) if e["name"] != "SQLITE_TMPDIR"]
        if env:
            c["env"] = env
        else:
            c.pop("env", None)
    for key in ["completionMode", "completions", "parallelism"]:
        if key in pg_job:
            job[key] = pg_job[key]
    return cj


def check_postgres_overlay(pg: dict, pg_config: dict, base: dict | None, base_config: dict | None) -> None:
    """What the overlay must keep and change: an Indexed Job of [runtime] shards pods, no
    persistent volume, and otherwise the base's CronJob, inventory and config."""
    label = pg["label"]
    job = pg["job"]
    before = len(PROBLEMS)
    runtime = pg_config.get("runtime", {})
    shards = runtime.get("shards")
    if job.get("completionMode") != "Indexed":
        problem(f"{label}: completionMode must be Indexed (each pod gets its shard in JOB_COMPLETION_INDEX)")
    if not isinstance(shards, int) or isinstance(shards, bool) or shards < 1:
        problem(f"{PG_REL}/config.toml: [runtime] shards must be a whole number of shards, is {shards!r}")
    elif not (job.get("completions") == job.get("parallelism") == shards):
        problem(f"{label}: completions ({job.get('completions')}) and parallelism ({job.get('parallelism')}) "
                f"must both equal config.toml's [runtime] shards ({shards})")
    if "shard" in runtime:
        problem(f"{PG_REL}/config.toml: [runtime] shard = {runtime['shard']!r} would give every pod the same "
                "shard: use shards = N, the index comes from JOB_COMPLETION_INDEX")
    if pg["by_kind"].get("PersistentVolumeClaim"):
        problem(f"{label}: the overlay renders a PersistentVolumeClaim: {sorted(pg['by_kind']['PersistentVolumeClaim'])}")
    for name, v in pg["volumes"].items():
        kinds = set(v) - {"name"}
        if not kinds <= {"configMap", "secret", "emptyDir"}:
            problem(f"{label}: volume {name} is {sorted(kinds)}: only the ConfigMap, the Secret and emptyDir /tmp belong here")
    if "url" not in pg_config.get("database", {}):
        problem(f"{PG_REL}/config.toml: [database] url missing")
    if len(PROBLEMS) == before:
        ok(f"{label}: Indexed Job, completions = parallelism = [runtime] shards = {shards}, concurrencyPolicy Forbid; "
           "no PersistentVolumeClaim, volumes only ConfigMap, Secret and emptyDir")
    if base is None or base_config is None:
        problem(f"{label}: the base did not render, so the overlay cannot be compared with it")
        return

    before = len(PROBLEMS)
    expected = base_without_database_volume(base["cronjob"], job)
    actual = without_hashes(pg["cronjob"])
    if expected != actual:
        diff = difflib.unified_diff(
            yaml.safe_dump(expected, sort_keys=True).splitlines(),
            yaml.safe_dump(actual, sort_keys=True).splitlines(),
            "deploy/kubernetes less its database volume", PG_REL, lineterm="", n=2,
        )
        problem(f"{label}: differs from the base's CronJob by more than the overlay's patches (copy "
                f"deploy/kubernetes/cronjob.yaml to {PG_REL}/, and keep labels and images alike):\n"
                + "\n".join(diff))

    def generated(k8s: dict, kind: str, name: str) -> dict:
        found = [d for n, d in k8s["by_kind"].get(kind, {}).items() if unhashed(n) == name]
        return found[0] if len(found) == 1 else {}

    base_cm = generated(base, "ConfigMap", "engagement-ingest-config").get("data", {})
    pg_cm = generated(pg, "ConfigMap", "engagement-ingest-config").get("data", {})
    if set(base_cm) != set(pg_cm):
        problem(f"{label}: ConfigMap keys {sorted(pg_cm)} differ from the base's {sorted(base_cm)}")
    for key in sorted(set(base_cm) & set(pg_cm) - {"config.toml"}):
        if base_cm[key] != pg_cm[key]:
            problem(f"{label}: ConfigMap key {key} differs from the base's: copy deploy/kubernetes/{key} to {PG_REL}/")

    def shared_part(config: dict) -> dict:
        config = copy.deepcopy(config)
        config.pop("database", None)
        config.get("runtime", {}).pop("shards", None)
        return config

    if shared_part(base_config) != shared_part(pg_config):
        problem(f"{PG_REL}/config.toml differs from deploy/kubernetes/config.toml outside [database] and "
                "[runtime] shards: keep them alike")
    base_secret = set(generated(base, "Secret", "engagement-ingest-credentials").get("data", {}))
    pg_secret = set(generated(pg, "Secret", "engagement-ingest-credentials").get("data", {}))
    password = pg_config.get("database", {}).get("password_file", "").rpartition("/")[2]
    if pg_secret != base_secret | {password}:
        problem(f"{label}: Secret keys {sorted(pg_secret)} should be the base's {sorted(base_secret)} "
                f"and {password!r}")
    if len(PROBLEMS) == before:
        ok(f"{label}: the base's CronJob less its database volume, --metrics-file and SQLITE_TMPDIR; the base's "
           "inventory, config outside [database] and shards, and Secret keys plus " + repr(password))


# --- the program itself ------------------------------------------------------------------------


def run_binary(binary: str, args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ENGAGEMENT")}
    clean.update(env)
    return subprocess.run([binary, *args], env=clean, cwd=cwd, capture_output=True, text=True, timeout=60)


def check_with_binary(binary: str, repo: Path, work: Path, sd: dict, k8s_layout, pg_layout) -> None:
    print(f"against the program ({binary})")
    # systemd: credentials directory with placeholder files, the unit's environment.
    for name, (loaded, _, env) in sd["creds"].items():
        creds = work / f"credentials-{name}"
        creds.mkdir()
        for cid in loaded:
            (creds / cid).write_text(f"placeholder-{cid}\n")
        unit_env_vars = {k: v.replace("%d", str(creds)) for k, v in env.items()}
        unit_env_vars["ENGAGEMENT_CONFIG"] = str(repo / "deploy/systemd/config.toml")
        # The inventory and database of the sample config live in /etc and /var/lib.
        unit_env_vars["ENGAGEMENT__INVENTORY__PATH"] = str(repo / "deploy/kubernetes/tweets.csv")
        unit_env_vars["ENGAGEMENT__DATABASE__PATH"] = str(work / f"{name}.sqlite")
        r = run_binary(binary, ["check"], unit_env_vars, work)
        if r.returncode != 0:
            problem(f"{name}: `engagement-ingest check` with deploy/systemd/config.toml exited {r.returncode}:\n{r.stdout}{r.stderr}")
        else:
            ok(f"{name}: `engagement-ingest check` passes with deploy/systemd/config.toml and the unit's credentials")
        unit = sd["daemon"] if name == "engagement-ingest.service" else sd["oneshot"]
        for key in ["ExecStartPre", "ExecStart"]:
            for line in unit_values(unit, key):
                argv = shlex.split(line.lstrip("-@:+!"))[1:]
                r = run_binary(binary, [*argv, "--help"], unit_env_vars, work)
                if r.returncode != 0:
                    problem(f"{name}: {key}= arguments {argv} are not accepted by the program:\n{r.stderr}")
                else:
                    ok(f"{name}: {key}= arguments parse: {' '.join(argv)}")
    if k8s_layout is not None:
        check_pod_with_binary(binary, work, k8s_layout, "CronJob", "pod")
    if pg_layout is not None:
        check_postgres_with_binary(binary, work, pg_layout)


def lay_out_pod(work: Path, layout, subdir: str) -> tuple[Path, str]:
    """The mounted ConfigMap and Secret as files under a temporary root, and the config text with
    the mount paths rewritten to point there."""
    config_path, mounts, _, _ = layout
    root = work / subdir
    for mount, files in mounts.items():
        d = root / mount.lstrip("/")
        d.mkdir(parents=True, exist_ok=True)
        for n, data in files.items():
            (d / n).write_bytes(data)
    text = (root / config_path.lstrip("/")).read_text()

    def relocate(m: re.Match) -> str:
        path = m.group(1)
        inside = [mount for mount in mounts if path.startswith(mount + "/")]
        return f'"{root}{path}"' if inside else m.group(0)

    return root, re.sub(r'"(/[^"]*)"', relocate, text)


def check_args_with_binary(binary: str, work: Path, container: dict, local_config: Path, label: str) -> None:
    args = list(container.get("args", []))
    args[args.index("--config") + 1] = str(local_config)
    r = run_binary(binary, [*args, "--help"], {}, work)
    if r.returncode != 0:
        problem(f"{label}: container args {container.get('args')} are not accepted by the program:\n{r.stderr}")
    else:
        ok(f"{label}: container args parse: {' '.join(container.get('args', []))}")


def check_pod_with_binary(binary: str, work: Path, layout, label: str, subdir: str) -> None:
    _, text = lay_out_pod(work, layout, subdir)
    local_config = work / f"{subdir}-config.toml"
    local_config.write_text(text)
    r = run_binary(binary, ["--config", str(local_config), "check"], {}, work)
    if r.returncode != 0:
        problem(f"{label}: `engagement-ingest check` with the ConfigMap's config.toml exited {r.returncode}:\n{r.stdout}{r.stderr}")
    else:
        ok(f"{label}: `engagement-ingest check` passes with the ConfigMap's config.toml, the Secret and the volume as mounted")
    check_args_with_binary(binary, work, layout[2], local_config, label)


TEST_PG = "ENGAGEMENT_INGEST_TEST_PG"


def redacted(url: str) -> str:
    """A URL as it may be printed: any password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def with_database(url: str, name: str) -> str:
    """The libpq URL with its database (the path) replaced; host, port, user, query kept."""
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


def toml_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def check_postgres_with_binary(binary: str, work: Path, layout) -> None:
    """`engagement-ingest check` on the overlay's config, as each pod of the Indexed Job runs it,
    against the PostgreSQL server of $ENGAGEMENT_INGEST_TEST_PG (a fresh database on it); without
    the variable, reported as skipped."""
    label = "postgres CronJob"
    _, _, container, config = layout
    root, text = lay_out_pod(work, layout, "pod-postgres")
    local_config = work / "pod-postgres-config.toml"
    local_config.write_text(text)
    check_args_with_binary(binary, work, container, local_config, label)
    server = os.environ.get(TEST_PG)
    if not server:
        print(f"  skip {label}: `engagement-ingest check` with {PG_REL}/config.toml NOT RUN: "
              f"{TEST_PG} is not set (a PostgreSQL URL; CI sets it)")
        return
    psql = shutil.which("psql")
    if psql is None:
        problem(f"{label}: {TEST_PG} is set but there is no psql to create the check's database with")
        return
    database = f"engagement_deploy_check_{os.getpid()}"
    r = subprocess.run([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", server, "-c", f'CREATE DATABASE "{database}"'],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        problem(f"{label}: could not create database {database} on {redacted(server)}:\n{r.stderr}")
        return
    try:
        url = with_database(server, database)
        # The server's URL instead of the shipped one, and no password_file: the password, if
        # any, is in the URL or PGPASSWORD, as the test suite has it.
        lines = []
        section = None
        for line in text.splitlines():
            stripped = line.strip()
            if stripped.startswith("["):
                section = stripped
            if section == "[database]" and re.match(r"(url|password_file)\s*=", stripped):
                if stripped.startswith("url"):
                    lines.append(f"url = {toml_string(url)}")
                continue
            lines.append(line)
        local_config.write_text("\n".join(lines) + "\n")
        shards = config.get("runtime", {}).get("shards", 1)
        failed = []
        for index in range(shards if isinstance(shards, int) and shards > 0 else 1):
            r = run_binary(binary, ["--config", str(local_config), "check"], {"JOB_COMPLETION_INDEX": str(index)}, work)
            if r.returncode != 0:
                failed.append(f"JOB_COMPLETION_INDEX={index}: exited {r.returncode}:\n{r.stdout}{r.stderr}")
        if failed:
            problem(f"{label}: `engagement-ingest check` with {PG_REL}/config.toml on {redacted(url)}:\n"
                    + "\n".join(failed))
        else:
            ok(f"{label}: `engagement-ingest check` passes for each of the {shards} pods (JOB_COMPLETION_INDEX) "
               f"with {PG_REL}/config.toml on a new database on {TEST_PG}")
    finally:
        subprocess.run([psql, "-X", "-q", server, "-c", f'DROP DATABASE IF EXISTS "{database}"'],
                       capture_output=True, text=True, timeout=60)


# --- Prometheus alert rules --------------------------------------------------------------------

# The metrics the program exports that rules may use, with their labels (target labels such as
# job and instance come on top). A name not here is a typo, or a metric to add here first.
METRICS: dict[str, set[str]] = {
    "engagement_last_success_timestamp_seconds": {"kind"},
    "engagement_schedule_period_seconds": {"kind"},
    "engagement_start_time_seconds": set(),
    "engagement_account_state": {"account", "state"},
    "engagement_api_reachable": set(),
    "engagement_backfill_left_requests": set(),
    "engagement_inventory_invalid_lines": set(),
    "engagement_cycles_total": {"kind", "status"},
}
TARGET_LABELS = {"job", "instance"}
SEVERITIES = {"critical", "warning", "info"}
RULE_KEYS = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
PROM_DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
PROMQL_WORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
                "group_right", "offset", "bool", "inf", "nan", "atan2"}


def promql_names(expr: str) -> tuple[set[str], list[str]]:
    """Metric names an expression selects, and anything the scan cannot vouch for."""
    doubts = []
    text = re.sub(r'"(\\.|[^"\\])*"|\'(\\.|[^\'\\])*\'|`[^`]*`', '""', expr)  # strings
    text = re.sub(r"#[^\n]*", "", text)  # comments
    if "__name__" in text:
        doubts.append("selects by __name__: name the metric instead, so that it can be checked")
    for opening, closing in ["()", "{}", "[]"]:
        if text.count(opening) != text.count(closing):
            doubts.append(f"unbalanced {opening}{closing}")
    text = re.sub(r"\{[^{}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\[\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", text)
    names = set()
    for m in re.finditer(r"(?<![\w:.])[A-Za-z_:][\w:]*", text):
        word = m.group(0)
        if word.lower() in PROMQL_WORDS or re.match(r"\s*\(", text[m.end():]):
            continue  # operators, keywords, functions and aggregations
        names.add(word)
    return names, doubts


def series_name(selector: str) -> str:
    """The metric name of a promtool input series 'name{label="value"}'."""
    return re.match(r"\s*([A-Za-z_:][\w:]*)?", selector).group(1) or ""


def check_alerts(repo: Path) -> None:
    print("Prometheus alert rules (deploy/prometheus)")
    d = repo / "deploy/prometheus"
    before = len(PROBLEMS)
    try:
        rules_doc = yaml.safe_load((d / "alerts.yaml").read_text())
        tests_doc = yaml.safe_load((d / "alerts.test.yaml").read_text())
    except (OSError, yaml.YAMLError) as e:
        problem(f"deploy/prometheus: {e}")
        return
    if not isinstance(rules_doc, dict) or set(rules_doc) != {"groups"} or not rules_doc["groups"]:
        problem("alerts.yaml: must be a mapping with a non-empty groups: list and nothing else")
        return
    alerts: dict[str, int] = {}
    group_names = set()
    for gi, group in enumerate(rules_doc["groups"]):
        name = group.get("name") if isinstance(group, dict) else None
        if not isinstance(name, str) or not name:
            problem(f"alerts.yaml: group {gi} has no name")
            continue
        if name in group_names:
            problem(f"alerts.yaml: group name {name!r} is used twice")
        group_names.add(name)
        if not isinstance(group.get("rules"), list) or not group["rules"]:
            problem(f"alerts.yaml: group {name}: no rules")
            continue
        for ri, rule in enumerate(group["rules"]):
            where = f"alerts.yaml: {name}: rule {ri}"
            if not isinstance(rule, dict) or not isinstance(rule.get("alert"), str):
                problem(f"{where}: not an alert rule (alert: missing)")
                continue
            alert = rule["alert"]
            where = f"alerts.yaml: {alert}"
            alerts[alert] = alerts.get(alert, 0) + 1
            if not re.fullmatch(r"Engagement[A-Z][A-Za-z0-9]*", alert):
                problem(f"{where}: alert names are Engagement<CamelCase>")
            unknown = set(rule) - RULE_KEYS
            if unknown:
                problem(f"{where}: unknown keys {sorted(unknown)}")
            expr = rule.get("expr")
            if not isinstance(expr, str) or not expr.strip():
                problem(f"{where}: expr missing")
                continue
            for key in ["for", "keep_firing_for"]:
                if key in rule and not PROM_DURATION.match(str(rule[key])):
                    problem(f"{where}: {key}: {rule[key]!r} is not a Prometheus duration")
            labels = rule.get("labels") or {}
            if labels.get("severity") not in SEVERITIES:
                problem(f"{where}: labels.severity must be one of {sorted(SEVERITIES)}, is {labels.get('severity')!r}")
            annotations = rule.get("annotations") or {}
            for key in ["summary", "description"]:
                if not isinstance(annotations.get(key), str) or not annotations[key].strip():
                    problem(f"{where}: annotations.{key} missing")
            names, doubts = promql_names(expr)
            for doubt in doubts:
                problem(f"{where}: expr {doubt}")
            if not names:
                problem(f"{where}: expr selects no metric")
            for n in sorted(names - set(METRICS)):
                problem(f"{where}: expr uses {n!r}, which the program does not export")
            known = TARGET_LABELS.union(*(METRICS.get(n, set()) for n in names))
            for key, text in {**labels, **annotations}.items():
                for label in re.findall(r"\$labels\.(\w+)", str(text)):
                    if label not in known:
                        problem(f"{where}: {key} uses $labels.{label}, which none of {sorted(names)} carries")
    if len(PROBLEMS) == before:
        ok(f"alerts.yaml: {sum(alerts.values())} rules ({', '.join(alerts)}): each has expr, "
           "severity, summary and description, and uses only exported metrics and their labels")

    before = len(PROBLEMS)
    tests = tests_doc.get("tests") if isinstance(tests_doc, dict) else None
    if not tests or "alerts.yaml" not in (tests_doc.get("rule_files") or []):
        problem("alerts.test.yaml: needs rule_files: [alerts.yaml] and tests:")
        return
    fires: dict[str, int] = {}
    silent: dict[str, int] = {}
    for ti, test in enumerate(tests):
        for s in test.get("input_series", []):
            n = series_name(s.get("series", ""))
            if n not in METRICS:
                problem(f"alerts.test.yaml: test {ti}: input series {n!r} is not a metric the program exports")
        for case in test.get("alert_rule_test", []):
            name = case.get("alertname")
            if name not in alerts:
                problem(f"alerts.test.yaml: test {ti}: alertname {name!r} is not in alerts.yaml")
            counts = fires if case.get("exp_alerts") else silent
            counts[name] = counts.get(name, 0) + 1
    for name in alerts:
        if not fires.get(name) or not silent.get(name):
            problem(f"alerts.test.yaml: {name} needs a case where it fires and one where it does not "
                    f"(has {fires.get(name, 0)} and {silent.get(name, 0)})")
    if len(PROBLEMS) == before:
        ok("alerts.test.yaml: every alert has cases that fire and cases that stay silent; "
           "input series are exported metrics")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--kubectl", required=True)
    ap.add_argument("--validator", required=True)
    ap.add_argument("--binary")
    a = ap.parse_args()
    documented = documented_keys(a.repo / "config/example.toml")
    sd = check_systemd(a.repo, documented)
    print("Kubernetes manifests")
    docs = render_kustomization(a.repo, a.work, a.kubectl, "deploy/kubernetes")
    k8s = k8s_layout = None
    if docs:
        schema_validate(a.work, a.validator, "deploy/kubernetes")
        k8s = check_cronjob(docs, documented)
        if k8s:
            k8s_layout = check_k8s_config(k8s)
    print(f"Kubernetes PostgreSQL overlay ({PG_REL})")
    pg_docs = render_kustomization(a.repo, a.work, a.kubectl, PG_REL)
    pg_layout = None
    if pg_docs:
        schema_validate(a.work, a.validator, PG_REL)
        pg = check_cronjob(pg_docs, documented, "postgres CronJob")
        if pg:
            pg_layout = check_k8s_config(pg, PG_REL)
            if pg_layout:
                check_postgres_overlay(pg, pg_layout[3], k8s, k8s_layout[3] if k8s_layout else None)
    if a.binary:
        check_with_binary(a.binary, a.repo, a.work, sd, k8s_layout, pg_layout)
    check_alerts(a.repo)
    if PROBLEMS:
        print(f"\n{len(PROBLEMS)} problem(s) in the deployment files")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
