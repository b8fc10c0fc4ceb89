"""The plug-in registries: labelers, where labeling jobs run, walker integrators and biases.

Each maps a config name to the module (or "module:Class") that implements it, imported only
when used; adding one is that module plus one line here (docs/labeling.md "Adding a labeler"
and "Adding a backend", docs/exploration.md "Adding a walker or a bias"). The config fields
that choose from a registry (`registry_field`) validate against it and list its keys in the
JSON schema when they are used, so an entry added at runtime (a plug-in, a test) is a valid
choice everywhere, including `eip-al check` and the CLI.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

from pydantic import Field


class WalkerEntry(NamedTuple):
    """One walker integrator: its module, its ensemble and the `WalkerConfig` fields it reads."""

    target: str  # module with make(atoms, wc, rng) and STATE (eip_al/explore/integrators/)
    ensemble: Literal["nvt", "npt"]
    fields: tuple[str, ...]


# adding an integrator = its module + one line here (docs/exploration.md, "Adding a walker or a bias")
WALKERS: dict[str, WalkerEntry] = {
    "berendsen": WalkerEntry("eip_al.explore.integrators.berendsen", "nvt", ("tau_fs",)),
    "langevin": WalkerEntry("eip_al.explore.integrators.langevin", "nvt", ("friction_per_fs",)),
    "nose_hoover": WalkerEntry("eip_al.explore.integrators.nose_hoover", "nvt", ("tau_fs",)),
    "npt_berendsen": WalkerEntry("eip_al.explore.integrators.npt_berendsen", "npt",
                                 ("tau_fs", "pressure_bar", "taup_fs", "compressibility_per_bar")),
    "mtk": WalkerEntry("eip_al.explore.integrators.mtk", "npt", ("tau_fs", "pressure_bar", "taup_fs")),
}


class BiasEntry(NamedTuple):
    """One walker kind (bias): its module and the `ExploreConfig` field holding its settings."""

    target: str  # module with prepare(base, explore, frames, label) (eip_al/explore/biases/)
    section: str | None  # None: the bias takes no settings


# the walker `kind` is the bias: md = none (plain model forces), udd = uncertainty-driven
BIASES: dict[str, BiasEntry] = {
    "md": BiasEntry("eip_al.explore.biases.md", None),
    "udd": BiasEntry("eip_al.explore.biases.udd", "udd"),
}


class LabelerEntry(NamedTuple):
    """One labeler kind: its `Labeler` class and the `LabelerConfig` field holding its settings."""

    target: str  # "module:Class", imported only when the labeler is used
    section: str | None  # None: the labeler takes no settings
    required: tuple[str, ...] = ()  # fields of the section that have no default


# adding a labeler = its module + one line here (+ its settings section in eip_al/config.py): docs/labeling.md
LABELERS: dict[str, LabelerEntry] = {
    "mock": LabelerEntry("eip_al.label.mock:MockLabeler", "mock"),
    "cp2k": LabelerEntry("eip_al.label.cp2k:CP2KLabeler", "cp2k"),
    "ase": LabelerEntry("eip_al.label.ase:ASELabeler", "ase", ("calculator",)),
    "xtb": LabelerEntry("eip_al.label.xtb:XTBLabeler", "xtb"),
}


# where jobs run: `labeler.backend` -> its Backend class (eip_al/label/backends/, one module each)
BACKENDS: dict[str, str] = {
    "local": "eip_al.label.backends.local:LocalBackend",
    "slurm": "eip_al.label.backends.slurm:SlurmBackend",
    "export": "eip_al.label.backends.export:ExportBackend",
}


def registry_field(registry: dict[str, Any], default: str, what: str) -> Any:
    """A str config field whose choices are the registry's keys (see `check_registered`),
    listed in the JSON schema when the schema is built."""

    def enum(schema: dict[str, Any]) -> None:
        schema["enum"] = list(registry)

    return Field(default, description=f"{what}: a key of the registry", json_schema_extra=enum)


def check_registered(registry: dict[str, Any], value: str) -> str:
    """`value` if it is a key of `registry`; else the error pydantic reports for the field."""
    if value not in registry:
        raise ValueError(f"must be one of {', '.join(registry)}")
    return value
