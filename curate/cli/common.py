"""What every ``curate`` subcommand shares: log setup and the error exit."""
from __future__ import annotations

import logging
import os

import typer

LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


def setup_logging(verbose: bool = True, fmt: str = LOG_FORMAT) -> None:
    """INFO (``verbose``) or WARNING logs on stderr, without faiss's loader chatter.

    faiss-cpu >= 1.11 wheels dispatch AVX2/AVX-512 kernels inside one library, yet its loader first
    tries the old per-ISA module and logs "Could not load library with AVX2 support" at INFO,
    which reads like a failure when nothing is wrong (``faiss.get_compile_options()`` says
    ``DD AVX2``).
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format=fmt)
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)


def quiet_progress_bars(progress: bool) -> None:
    """With ``--no-progress``, also silence the bars that third-party loaders draw.

    transformers draws plain tqdm bars while it loads a GGUF ("Converting and de-quantizing GGUF
    tensors", "Loading weights") whatever curate's ``show_progress`` says; tqdm reads
    ``TQDM_DISABLE`` once, when it is first imported, so this must run before the command imports
    anything heavy. It is inherited by child processes (Prefect/Dask workers) too.
    """
    if not progress:
        os.environ["TQDM_DISABLE"] = "1"


def fail(msg: str, code: int = 2) -> None:
    """Print ``error: msg`` on stderr and exit with ``code``."""
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)
