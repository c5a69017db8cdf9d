"""Where every file of a session lies. `SessionLayout` names them all: as paths on disk,
and as artifact names (relative to the session's folder: what `ArtifactStore` takes). No
other module spells a session path, so a change of layout happens here or nowhere.

    ROOT/sessions/SESSION_ID/
        manifest.json              every artifact with its hash (ArtifactStore's own file)
        policy.json                the policy the session ran with (what `resume` reads)
        probes/probe-N/            the N-th fit on the model's greedy answers
        probes/cycle-N/            the probe refit on cycle N's samples
        cycle-N/attempts.jsonl     the samples acquire drew
        cycle-N/features/          their prefill features
        cycle-N/sft.jsonl          the SFT examples select chose
        cycle-N/pairs.jsonl        the preference pairs select chose
        cycle-N/verdicts.jsonl     each sample's verdict
        cycle-N/dev-VERSION.jsonl  a version's dev answers (cycle 0: the initial model's)
        versions/VERSION/adapter/  a trained version's LoRA adapter
        versions/VERSION/merged/   and its merged weights (what an engine loads)
        report.json                the closing report (test split, initial and final model)
        report.html                the session's page
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

SESSIONS = "sessions"
VERSIONS = "versions"
PROBES = "probes"
CYCLE = "cycle-"
ADAPTER = "adapter"
MERGED = "merged"


@dataclass(frozen=True)
class SessionLayout:
    """The paths of the session whose folder is `folder` (`ROOT/sessions/SESSION_ID`).

    >>> layout = SessionLayout.of("runs", "s1")
    >>> layout.folder.as_posix(), layout.session_id, layout.policy.as_posix()
    ('runs/sessions/s1', 's1', 'runs/sessions/s1/policy.json')
    >>> layout.merged("v2").as_posix()
    'runs/sessions/s1/versions/v2/merged'
    """

    folder: Path

    POLICY: ClassVar[str] = "policy.json"
    REPORT_JSON: ClassVar[str] = "report.json"
    REPORT_HTML: ClassVar[str] = "report.html"
    MODEL_JSON: ClassVar[str] = "model.json"  # the best version with its gate (`serve --session`)
    # every cycle's attempts, and every trained version's adapter (glob patterns, relative
    # to the session's folder)
    ATTEMPTS_GLOB: ClassVar[str] = f"{CYCLE}*/attempts.jsonl"
    ADAPTERS_GLOB: ClassVar[str] = f"{VERSIONS}/v*/{ADAPTER}"

    @classmethod
    def of(cls, root: Path | str, session_id: str) -> SessionLayout:
        """The layout of session `session_id` in the store whose root is `root`."""
        return cls(cls.sessions_folder(root) / session_id)

    @staticmethod
    def sessions_folder(root: Path | str) -> Path:
        """The folder holding one folder per session of the store at `root`."""
        return Path(root) / SESSIONS

    @property
    def session_id(self) -> str:
        return self.folder.name

    # ------------------------------------------------------------ paths in the folder

    @property
    def policy(self) -> Path:
        return self.folder / self.POLICY

    @property
    def report_json(self) -> Path:
        return self.folder / self.REPORT_JSON

    @property
    def report_html(self) -> Path:
        return self.folder / self.REPORT_HTML

    @property
    def model_json(self) -> Path:
        return self.folder / self.MODEL_JSON

    @property
    def probes(self) -> Path:
        """The folder of every probe the session fitted."""
        return self.folder / PROBES

    @property
    def versions(self) -> Path:
        """The folder of the trained versions (a cluster with shared storage keeps them in
        the same layout under its own root instead)."""
        return self.folder / VERSIONS

    def version(self, name: str) -> Path:
        return self.versions / name

    def adapter(self, version: str) -> Path:
        return self.adapter_of(self.version(version))

    def merged(self, version: str) -> Path:
        return self.merged_of(self.version(version))

    # ------------------------------------------------ inside any version's folder

    @staticmethod
    def adapter_of(version_dir: Path) -> Path:
        """The LoRA adapter in a version's folder."""
        return version_dir / ADAPTER

    @staticmethod
    def merged_of(version_dir: Path) -> Path:
        """The merged weights (and tokenizer) in a version's folder: what an engine loads."""
        return version_dir / MERGED

    # ----------------------------------------- artifact names (relative to the folder)

    @staticmethod
    def cycle_folder(cycle: int) -> str:
        """
        >>> SessionLayout.cycle_folder(3)
        'cycle-3'
        """
        return f"{CYCLE}{cycle}"

    @staticmethod
    def cycle_number(cycle_folder: str) -> int:
        """The cycle of a cycle's folder name.

        >>> SessionLayout.cycle_number("cycle-12")
        12
        """
        return int(cycle_folder.removeprefix(CYCLE))

    @classmethod
    def attempts_name(cls, cycle: int) -> str:
        return f"{cls.cycle_folder(cycle)}/attempts.jsonl"

    @classmethod
    def features_name(cls, cycle: int) -> str:
        return f"{cls.cycle_folder(cycle)}/features"

    @classmethod
    def sft_name(cls, cycle: int) -> str:
        return f"{cls.cycle_folder(cycle)}/sft.jsonl"

    @classmethod
    def pairs_name(cls, cycle: int) -> str:
        return f"{cls.cycle_folder(cycle)}/pairs.jsonl"

    @classmethod
    def verdicts_name(cls, cycle: int) -> str:
        return f"{cls.cycle_folder(cycle)}/verdicts.jsonl"

    @classmethod
    def dev_answers_name(cls, cycle: int, version: str) -> str:
        """
        >>> SessionLayout.dev_answers_name(2, "v1")
        'cycle-2/dev-v1.jsonl'
        """
        return f"{cls.cycle_folder(cycle)}/dev-{version}.jsonl"

    @staticmethod
    def session_probe_name(fits: int) -> str:
        """The folder of the session's `fits`-th probe fitted on greedy answers (a resumed
        fit overwrites its own folder instead of orphaning one).

        >>> SessionLayout.session_probe_name(0)
        'probes/probe-0'
        """
        return f"{PROBES}/probe-{fits}"

    @staticmethod
    def is_session_probe(name: str) -> bool:
        """Whether probe `name` was fitted on greedy answers (not refit on a cycle's samples).

        >>> SessionLayout.is_session_probe("probes/probe-1"), SessionLayout.is_session_probe(
        ...     "probes/cycle-1")
        (True, False)
        """
        return name.startswith(f"{PROBES}/probe-")

    @staticmethod
    def final_probe_name(version: str) -> str:
        """The folder of the probe fitted at the end on the best version's dev answers.

        >>> SessionLayout.final_probe_name("v2")
        'probes/final-v2'
        """
        return f"{PROBES}/final-{version}"

    @classmethod
    def loop_probe_name(cls, cycle: int) -> str:
        """The folder of the probe refit on cycle `cycle`'s samples.

        >>> SessionLayout.loop_probe_name(2)
        'probes/cycle-2'
        """
        return f"{PROBES}/{cls.cycle_folder(cycle)}"

    @staticmethod
    def version_name(name: str) -> str:
        """The artifact name of trained version `name`'s folder.

        >>> SessionLayout.version_name("v1")
        'versions/v1'
        """
        return f"{VERSIONS}/{name}"
