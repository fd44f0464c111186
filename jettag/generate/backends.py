"""pythia8mc and fastjet (the optional `gen` extra): imported when first needed, with one sentence
naming the package to install when missing; FastJet's banner kept off stdout."""

from __future__ import annotations

import os
import sys

from jettag.errors import ConfigError
from jettag.generate.processes import JET_RADIUS


def _install_hint(missing: str) -> ConfigError:
    return ConfigError(
        f"jettag-generate needs {missing}, which is not installed; install with pip install 'jettag[gen]'."
    )


def import_pythia():
    try:
        import pythia8mc
    except ImportError:
        raise _install_hint("pythia8mc") from None
    return pythia8mc


def import_fastjet():
    try:
        import fastjet
    except ImportError:
        raise _install_hint("fastjet") from None
    return fastjet


def check_generators() -> None:
    """Raise a `ConfigError` naming the missing package when pythia8mc or fastjet is absent."""
    import_pythia()
    import_fastjet()


_FASTJET_QUIET = False


def silence_fastjet_banner(fastjet) -> None:
    """FastJet prints its banner on stdout at the first clustering of a process: do that one into /dev/null."""
    global _FASTJET_QUIET
    if _FASTJET_QUIET:
        return
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        jet_def = fastjet.JetDefinition(fastjet.antikt_algorithm, JET_RADIUS)
        fastjet.ClusterSequence([fastjet.PseudoJet(1.0, 0.0, 0.0, 1.0)], jet_def).inclusive_jets()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)
    _FASTJET_QUIET = True
