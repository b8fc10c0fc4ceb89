"""The run configuration users edit (`configs/*.yaml`), as one validated pydantic model.

Loading never shows a traceback for a user mistake: `load_config` raises `ConfigError`
whose message names the file and each bad field, e.g.
``configs/x.yaml: selection.n_select: must be > 0 (got 0)``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from ase.data import chemical_symbols
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from eip_al.registries import (
    BACKENDS,
    BIASES,
    LABELERS,
    WALKERS,
    check_registered,
    registry_field,
)

DEVICE_INTEGRATORS = ("berendsen", "langevin")  # what explore.engine 'device' integrates (explore/device.py)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _no_control(value: Any) -> Any:
    """Refuse a path or command word with a newline or other control character: it would end
    up in a shell or Slurm script (a newline there starts a new command)."""
    if _CONTROL.search(str(value)):
        raise ValueError("must not contain a newline or other control character")
    return value


def check_safe_path(path: Path | str, what: str) -> None:
    """ConfigError if `path` (written into a job or Slurm script) has a control character."""
    try:
        _no_control(path)
    except ValueError as exc:
        raise ConfigError(f"{what}: {exc} (got {str(path)!r})") from None


SafePath = Annotated[Path, AfterValidator(_no_control)]  # a path written into job scripts
SafeStr = Annotated[str, AfterValidator(_no_control)]
PosFloat = Annotated[float, Field(gt=0)]
PosInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]


class ConfigError(ValueError):
    """A configuration file or mapping is malformed; the message names file and fields."""


class Section(BaseModel):
    # every float of every section must be finite (`cutoff: .inf` or `nan` is a typo, not a value)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class SystemConfig(Section):
    """What is simulated: a generated water box, or any structure file ASE/pymatgen reads."""

    kind: Literal["water", "file"] = "water"
    n_molecules: PosInt = 96
    density_g_cm3: PosFloat = 0.997
    structure_file: SafePath | None = None  # kind=file: CIF, POSCAR, extxyz, ...
    seed: int = 0

    @model_validator(mode="after")
    def _file_needs_path(self) -> SystemConfig:
        if self.kind == "file" and self.structure_file is None:
            raise ValueError("structure_file is required when kind is 'file'")
        return self


class SeedDataConfig(Section):
    """Generation-0 data: classical MD with the mock force field, or the user's extxyz."""

    source: Literal["md", "file"] = "md"
    file: SafePath | None = None  # source=file: labelled extxyz (energy + forces)
    n_frames: PosInt = 1000
    temperature_K: PosFloat = 300.0
    timestep_fs: PosFloat = 0.5
    equilibration_steps: NonNegInt = 2000
    stride: PosInt = 40  # MD steps between sampled frames (decorrelation)
    seed: int = 0

    @model_validator(mode="after")
    def _file_needs_path(self) -> SeedDataConfig:
        if self.source == "file" and self.file is None:
            raise ValueError("file is required when source is 'file'")
        return self


class ModelConfig(Section):
    """PaiNN backbone + evidential head (docs/eip-method §1; head choice: docs/model.md)."""

    n_features: PosInt = 128
    n_interactions: PosInt = 3
    cutoff: PosFloat = 5.0  # Å
    n_rbf: PosInt = 20
    dtype: Literal["float32", "float64"] = "float32"
    head: Literal["symmetric", "paper"] = "symmetric"  # rotation-invariant σ_i, or the paper's per-component head
    novelty: bool = True  # symmetric head: feature-space novelty divides ν, fitted after training (docs/model.md)
    # uncertainty source (docs/model.md): the eIP head, or an ensemble of head-less PaiNNs (ensemble_size× cost)
    uncertainty: Literal["evidential", "ensemble"] = "evidential"
    ensemble_size: Annotated[int, Field(ge=2)] = 4  # members of `uncertainty: ensemble` (seeds seed … seed+M−1)


class LossConfig(Section):
    """Evidential loss (docs/eip-method §2). Defaults: see docs/defaults.md."""

    q: Annotated[float, Field(gt=0, lt=1)] = 0.5  # 0.5 required by the symmetric head (frame-independent centre)
    lam: Annotated[float, Field(ge=0)] = 1.0  # λ, regulariser weight
    w_energy: Annotated[float, Field(ge=0)] = 10.0  # w, weight of the per-atom energy L1 (eV/atom)
    k_force: Annotated[float, Field(ge=0)] = 1.0  # k_F


class TrainConfig(Section):
    epochs: PosInt = 200
    batch_size: PosInt = 4
    lr: PosFloat = 1e-4
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    lr_patience: PosInt = 10  # ReduceLROnPlateau patience, epochs
    lr_factor: Annotated[float, Field(gt=0, lt=1)] = 0.5
    early_stopping_patience: PosInt = 30
    max_time_s: PosFloat | None = None
    warm_start: bool = True  # start generation g from generation g-1's checkpoint
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["off", "bf16", "fp16"] = "off"  # autocast of the training forward, fp16 CUDA only (docs/defaults.md)
    seed: int = 0
    loss: LossConfig = LossConfig()

    @model_validator(mode="after")
    def _fp16_needs_cuda(self) -> TrainConfig:
        if self.amp == "fp16" and self.device == "cpu":
            raise ValueError("amp 'fp16' needs device 'cuda' (on CPU use amp 'bf16' or 'off')")
        return self


class UDDConfig(Section):
    """Uncertainty-driven dynamics bias (docs/eip-method §5)."""

    form: Literal["kulichenko", "reference"] = "reference"
    A: Annotated[float, Field(ge=0)] = 2000.0  # eV
    B: PosFloat = 20.0
    limiter: bool = True
    C: PosFloat = 0.2  # eV/Å
    D: PosFloat = 1.5
    # if set, A is replaced per generation by the amplitude that gives this median
    # |F̃_b|/|F| on the model's own training frames (Kulichenko et al.: ≈ 0.36), so one
    # config gives the same bias strength at any system size (docs/exploration.md)
    target_bias_ratio: PosFloat | None = None
    scale_frames: PosInt = 16  # training frames used to find that amplitude


class WalkerConfig(Section):
    """One exploration trajectory template; `replicas` copies differ by seed and start frame.

    `kind` picks the bias (`BIASES`), `thermostat` the integrator and ensemble (`WALKERS`;
    the historical name covers the barostats too). Each integrator reads only its fields."""

    kind: str = registry_field(BIASES, "md", "bias")
    temperature_K: PosFloat = 300.0
    steps: PosInt = 1000
    timestep_fs: PosFloat = 0.5
    thermostat: str = registry_field(WALKERS, "berendsen", "integrator")
    tau_fs: PosFloat = 100.0  # thermostat time constant (Berendsen, Nosé–Hoover, MTK)
    friction_per_fs: PosFloat = 0.01  # Langevin friction
    pressure_bar: float = 1.0  # NPT target pressure
    taup_fs: PosFloat = 1000.0  # NPT barostat time constant
    compressibility_per_bar: PosFloat = 4.57e-5  # Berendsen NPT (water at 300 K)
    sample_every: PosInt = 10  # steps between candidate frames
    replicas: PosInt = 1
    seed: int = 0

    @field_validator("kind", "thermostat")
    @classmethod
    def _registered(cls, value: str, info: ValidationInfo) -> str:
        return check_registered(BIASES if info.field_name == "kind" else WALKERS, value)

    @property
    def ensemble(self) -> Literal["nvt", "npt"]:
        return WALKERS[self.thermostat].ensemble


def parse_pair(name: str) -> tuple[int, int]:
    """'O-H' (or 'H-O') -> (8, 1), heavier element first; ValueError naming the bad pair."""
    parts = name.split("-")
    if len(parts) != 2 or any(p not in chemical_symbols[1:] for p in parts):
        raise ValueError(f"{name!r} is not a pair of element symbols like 'O-H'")
    a, b = sorted((chemical_symbols.index(p) for p in parts), reverse=True)
    return a, b


class CollapseConfig(Section):
    """When a trajectory is declared collapsed (stopped cleanly, not raised), and which
    frames selection refuses as unphysical: the same per-pair distance rule for both
    (eip_al/screening.py, docs/exploration.md)."""

    min_distance: PosFloat = 0.6  # Å, absolute floor for any pair
    # floor per pair: covalent_factor × (r_cov(a) + r_cov(b)) (ASE covalent radii)
    covalent_factor: PosFloat = 0.6
    # learned limit per pair: learned_factor × the smallest distance in the reference data
    # (None: not learned); the reference is the seed dataset (fixed for the run) or the
    # dataset of the current generation
    learned_factor: Annotated[float, Field(gt=0, le=1)] | None = 0.9
    learn_from: Literal["seed", "dataset"] = "seed"
    # explicit limits that replace the learned one, e.g. {"O-O": 2.2} (Å)
    min_pair_distance: dict[str, PosFloat] = Field(default_factory=dict)
    max_oh_bond: PosFloat | None = 1.6  # Å; water only: an H farther than this from every O
    max_temperature_factor: PosFloat = 3.0  # T > factor * target
    max_force: PosFloat = 50.0  # eV/Å on any atom
    # NPT walkers: the density (g/cm³) must stay in [density_min, density_max] (water's
    # defaults; None switches a bound off). NVT boxes keep their start density, never checked.
    density_min_g_cm3: PosFloat | None = 0.5
    density_max_g_cm3: PosFloat | None = 1.5

    @model_validator(mode="after")
    def _pairs_known(self) -> CollapseConfig:
        for name in self.min_pair_distance:
            try:
                parse_pair(name)
            except ValueError as exc:
                raise ValueError(f"min_pair_distance: {exc}") from None
        lo, hi = self.density_min_g_cm3, self.density_max_g_cm3
        if lo is not None and hi is not None and not lo < hi:
            raise ValueError(f"density_min_g_cm3 {lo} must be below density_max_g_cm3 {hi}")
        return self


class ExploreConfig(Section):
    walkers: list[WalkerConfig] = Field(
        default_factory=lambda: [WalkerConfig(kind="md"), WalkerConfig(kind="udd")]
    )
    udd: UDDConfig = UDDConfig()
    collapse: CollapseConfig = CollapseConfig()
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # model precision while exploring; auto: float32 on a GPU, the checkpoint's on CPU
    dtype: Literal["auto", "float32", "float64"] = "auto"
    # all walkers of a generation advance together, one batched model pass per step (same
    # trajectories as one by one; eip_al/explore/batch.py, docs/exploration.md); auto: batched,
    # except on CPU with flow.task_runner dask (walkers then run on separate workers)
    batched: Literal["auto"] | bool = "auto"
    # ase: ASE integrators on the host, the model on explore.device; device: all walkers as one
    # torch state on explore.device (integrator, neighbor lists with a skin, model pass), NVT
    # berendsen/langevin walkers only (eip_al/explore/device.py, docs/exploration.md)
    engine: Literal["ase", "device"] = "ase"
    # torch.compile the model's backbone for exploration (inductor, dynamic shapes; needs a C
    # compiler): the first pass compiles (~12 s for the paper model on 2 cores), later passes
    # measured 1.7x faster on CPU; same results up to float rounding (docs/exploration.md)
    compile: bool = False
    restart_every: PosInt = 500  # steps between a walker's restart points (resume after a crash)

    @model_validator(mode="after")
    def _engine_supports_walkers(self) -> ExploreConfig:
        if self.engine == "device":
            bad = sorted({w.thermostat for w in self.walkers} - set(DEVICE_INTEGRATORS))
            if bad:
                raise ValueError(f"engine 'device' integrates {' and '.join(DEVICE_INTEGRATORS)} walkers only "
                                 f"(got thermostat {', '.join(bad)}); use engine 'ase' for them")
        return self


class SelectConfig(Section):
    """Trust bands and selection rules (DP-GEN vocabulary: accurate/candidate/failed)."""

    n_select: PosInt = 1000
    # sigma: rank candidates by σ (the loop); random: a uniform draw of n_select physical,
    # non-duplicate frames whatever their σ — the budget-matched baseline (docs/selection.md)
    method: Literal["sigma", "random"] = "sigma"
    lo: PosFloat = 0.05  # eV/Å configuration sigma; below = accurate
    hi: PosFloat = 1.0  # at or above = failed (likely unphysical)
    lo_quantile: Fraction | None = None  # set lo adaptively from validation-set sigma
    min_step_gap: NonNegInt = 20  # MD steps between two picks of the same walker
    diversity: Literal["none", "fps"] = "none"
    fps_pool_factor: PosInt = 10  # fps picks from the top fps_pool_factor * n_select eligible frames
    converge_candidate_fraction: Fraction = 0.05
    converge_generations: PosInt = 2
    seed: int = 0
    # docs/calibration.md: lo/hi on raw σ or on the calibrated expected force error (eV/Å)
    scale: Literal["raw", "calibrated"] = "raw"
    # label-noise flags (per configuration): aleatoric ≥ factor × validation median aleatoric and
    # epistemic/aleatoric ≤ ratio × its validation 90th percentile; flagged candidates are not
    # selected. None switches it off. docs/calibration.md
    noise_aleatoric_factor: PosFloat | None = 1.5
    noise_max_epistemic_ratio: PosFloat = 1.2
    # stop also requires the fresh labels' mean per-config force error below this (eV/Å)
    converge_force_error: PosFloat | None = None

    @model_validator(mode="after")
    def _lo_below_hi(self) -> SelectConfig:
        if self.lo >= self.hi:
            raise ValueError(f"lo ({self.lo}) must be below hi ({self.hi})")
        if self.method == "random" and self.diversity != "none":
            raise ValueError("method 'random' ignores σ; it cannot be combined with diversity 'fps'")
        if self.scale == "calibrated" and self.lo_quantile is not None:
            raise ValueError(
                "lo_quantile sets lo on the raw σ scale; with scale 'calibrated' give lo in eV/Å "
                "of expected force error instead (drop lo_quantile)"
            )
        return self


class MockLabelerConfig(Section):
    """The flexible-water force field that stands in for DFT (eip_al/label/mock.py)."""

    energy_noise_eV: Annotated[float, Field(ge=0)] = 0.0
    force_noise_eV_A: Annotated[float, Field(ge=0)] = 0.0
    failure_rate: Fraction = 0.0
    seed: int = 0


class CP2KConfig(Section):
    template: SafePath = Path("templates/cp2k/water-pbe-d3.inp")
    user_input: SafePath | None = None  # a full CP2K input; parsed and regenerated
    executable: Annotated[SafeStr, Field(min_length=1)] = "cp2k.psmp"
    launcher: list[SafeStr] = Field(default_factory=list)  # e.g. ["mpirun", "-np", "2"]
    cutoff_ry: PosFloat = 400.0
    rel_cutoff_ry: PosFloat = 50.0
    eps_scf: PosFloat = 1e-6
    max_scf: PosInt = 50
    retry_scf: bool = True
    timeout_s: PosFloat = 3600.0
    schema_xml: SafePath | None = None  # cp2k_input.xml of the CP2K that runs the jobs (default: `executable --xml`)
    omp_num_threads: PosInt | None = None  # OMP_NUM_THREADS in each job's run script (None: inherit)


class SlurmConfig(Section):
    partition: SafeStr | None = None
    account: SafeStr | None = None
    time: SafeStr = "01:00:00"
    ntasks: PosInt = 1
    cpus_per_task: PosInt = 1
    max_array_parallel: PosInt = 50
    poll_interval_s: PosFloat = 30.0
    extra_sbatch: list[SafeStr] = Field(default_factory=list)


_IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


class ASELabelerConfig(Section):
    """Any ASE calculator as the labeler (eip_al/label/ase.py), constructed as
    `Class(**kwargs)` per job. Only a config file sets it: a served deployment cannot."""

    calculator: str | None = None  # "module:Class", e.g. "ase.calculators.emt:EMT"
    kwargs: dict[str, Any] = Field(default_factory=dict)  # JSON values (they go into job.json)
    omp_num_threads: PosInt | None = None  # OMP_NUM_THREADS in each job's run script (None: inherit)

    @field_validator("calculator")
    @classmethod
    def _import_path(cls, value: str | None) -> str | None:
        if value is not None and not _IMPORT_PATH.fullmatch(value):
            raise ValueError('must be an import path "module:Class", e.g. "ase.calculators.emt:EMT"')
        return value


class XTBConfig(Section):
    """GFN-xTB through tblite's ASE calculator (eip_al/label/xtb.py; extra `xtb`)."""

    method: Literal["GFN2-xTB", "GFN1-xTB"] = "GFN2-xTB"
    accuracy: PosFloat = 1.0  # tblite's numerical accuracy (smaller: tighter SCF)
    electronic_temperature_K: PosFloat = 300.0  # Fermi smearing
    max_iterations: PosInt = 250  # SCF cycles; more is scf_not_converged
    charge: int = 0  # total charge of every frame
    omp_num_threads: PosInt | None = None  # OMP_NUM_THREADS in each job's run script (None: inherit)


class LabelerConfig(Section):
    kind: str = registry_field(LABELERS, "mock", "labeler")
    backend: str = registry_field(BACKENDS, "local", "where jobs run")
    n_parallel: PosInt = 1  # local jobs at once
    max_failure_fraction: Fraction = 0.2
    max_force_eV_A: PosFloat = 100.0  # a label with any |F| above this is implausible_forces
    # a label whose max per-atom |F| exceeds outlier_force_factor × the outlier_percentile of
    # the per-atom |F| of the dataset it would join is quarantined (outlier_forces: counted as
    # a failure, not merged; docs/labeling.md). None switches it off.
    outlier_force_factor: PosFloat | None = 4.0
    outlier_percentile: Annotated[float, Field(gt=0, le=100)] = 99.9
    mock: MockLabelerConfig = MockLabelerConfig()
    cp2k: CP2KConfig = CP2KConfig()
    ase: ASELabelerConfig = ASELabelerConfig()
    xtb: XTBConfig = XTBConfig()
    slurm: SlurmConfig = SlurmConfig()

    @field_validator("kind", "backend")
    @classmethod
    def _registered(cls, value: str, info: ValidationInfo) -> str:
        return check_registered(LABELERS if info.field_name == "kind" else BACKENDS, value)

    @model_validator(mode="after")
    def _required_settings(self) -> LabelerConfig:
        entry = LABELERS[self.kind]
        for name in entry.required:
            if getattr(getattr(self, str(entry.section)), name) is None:
                raise ValueError(f"{entry.section}.{name} is required when kind is {self.kind!r}")
        return self


class MergeConfig(Section):
    valid_fraction: Fraction = 0.1
    test_fraction: Fraction = 0.1
    allow_theory_mismatch: bool = False
    seed: int = 0

    @model_validator(mode="after")
    def _some_left_for_training(self) -> MergeConfig:
        if self.valid_fraction + self.test_fraction >= 1:
            raise ValueError(
                f"valid_fraction + test_fraction must be below 1 (got {self.valid_fraction} + "
                f"{self.test_fraction}): nothing would be left to train on"
            )
        return self


class FlowConfig(Section):
    task_runner: Literal["threads", "dask"] = "threads"
    max_workers: PosInt = 2
    dask_address: str | None = None  # an existing Dask scheduler; None = local cluster
    label_retries: NonNegInt = 2  # retries of a labeling task that raised (not a failed job)
    retry_delay_s: Annotated[float, Field(ge=0)] = 10.0  # first retry delay; doubles after


class ReportConfig(Section):
    """Per-generation reports (eip_al/report): diversity grid and the selection audit.

    The entropy grid ranges are fixed so that generations (and MD vs UDD) are comparable;
    defaults cover liquid water's H–O–H angle and O–H bond length (docs/report.md).
    """

    entropy_bins: Annotated[int, Field(ge=2)] = 40  # Ne: Ne x Ne grid
    angle_range_deg: tuple[float, float] = (80.0, 130.0)
    bond_range_A: tuple[float, float] = (0.85, 1.25)
    audit: bool = True  # predict on new labels / fixed test split with this generation's model

    @model_validator(mode="after")
    def _ranges_increasing(self) -> ReportConfig:
        for name in ("angle_range_deg", "bond_range_A"):
            lo, hi = getattr(self, name)
            if not lo < hi:
                raise ValueError(f"{name}: lower bound {lo} must be below upper bound {hi}")
        return self


class ALConfig(Section):
    """Everything one active-learning run needs."""

    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")] = "al-water"
    generations: PosInt = 3
    run_dir: SafePath | None = None  # default: runs/<name>
    system: SystemConfig = SystemConfig()
    seed_data: SeedDataConfig = SeedDataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    explore: ExploreConfig = ExploreConfig()
    selection: SelectConfig = SelectConfig()
    labeler: LabelerConfig = LabelerConfig()
    merge: MergeConfig = MergeConfig()
    flow: FlowConfig = FlowConfig()
    report: ReportConfig = ReportConfig()

    def resolved_run_dir(self) -> Path:
        return Path(self.run_dir) if self.run_dir is not None else Path("runs") / self.name


# Where and how a run executes, not what it computes: changing one of these on an existing
# run needs no --fork (`rundir.RunDir.init`). Dotted paths into ALConfig; a prefix covers
# every field below it. Everything else is science: it changes the results, so a changed
# value under an existing run directory is refused unless the run is forked.
EXECUTION_FIELDS: tuple[str, ...] = (
    "generations",  # how many to run; raising it continues the same run
    "run_dir",
    "train.device",
    "explore.device",
    "explore.batched",  # batched or one by one: identical trajectories (tests/test_explore_batch.py)
    "explore.engine",  # ASE or device engine: the same trajectories (tests/test_explore_device.py)
    "explore.compile",  # compiled backbone: the same results up to float rounding (tests/test_compile.py)
    "explore.dtype",  # precision of the walkers' model on the device (auto: the checkpoint's on CPU)
    "labeler.backend",
    "labeler.n_parallel",
    "labeler.slurm",
    "labeler.cp2k.executable",
    "labeler.cp2k.launcher",
    "labeler.cp2k.timeout_s",
    "labeler.cp2k.omp_num_threads",
    "labeler.ase.omp_num_threads",
    "labeler.xtb.omp_num_threads",
    "flow",
)


def is_execution_field(dotted: str) -> bool:
    """Whether the config field `dotted` (e.g. "flow.max_workers") is an execution setting."""
    return any(dotted == f or dotted.startswith(f + ".") for f in EXECUTION_FIELDS)


def _format_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<top level>"
        msg = err["msg"]
        if msg.startswith("Input should be greater than "):
            msg = "must be > " + msg.removeprefix("Input should be greater than ")
        elif msg.startswith("Value error, "):
            msg = msg.removeprefix("Value error, ")
        elif err["type"] == "finite_number":
            msg = "must be a finite number"
        elif err["type"] == "extra_forbidden":
            msg = "unknown field (typo?)"
        got = err.get("input")
        shown = "" if err["type"] in ("extra_forbidden", "missing") or isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"{loc}: {msg}{shown}")
    return "; ".join(lines)


def config_from_mapping(data: Any, source: str = "<mapping>") -> ALConfig:
    """Validate a mapping as ALConfig; ConfigError names `source` and every bad field."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at top level, got {type(data).__name__}")
    try:
        return ALConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_format_errors(exc)}") from None


def load_config(path: Path | str) -> ALConfig:
    """Load a YAML run config (an empty file is refused). Relative paths inside stay relative
    to the current directory."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not data:  # an empty file would silently start the defaults: the paper's 96-water run
        raise ConfigError(
            f"{path}: the config is empty; a run config sets at least `name` "
            "(start from configs/al-water-demo.yaml)"
        )
    return config_from_mapping(data, str(path))


def dump_config(cfg: ALConfig) -> str:
    """The resolved config as YAML (all defaults spelled out)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
