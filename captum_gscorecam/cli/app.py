"""``gscorecam app``: serve the web page of :mod:`captum_gscorecam.app` (gradio imported only
when it runs).
"""

from __future__ import annotations

import argparse
import signal

from captum_gscorecam.cli.options import (
    UsageError,
    add_model_options,
    chosen_model,
    load_chosen_model,
    port_arg,
    usage_errors,
    wrapped,
)

__all__ = ["add_parser", "run"]


def add_parser(subcommands: argparse._SubParsersAction) -> None:
    """Register ``app`` on the ``gscorecam`` subcommands (no gradio, no torch imported)."""
    a = subcommands.add_parser(
        "app",
        help="serve a web page to explain photos (needs the [app] extra)",
        description=wrapped(
            "Serve a web page (Gradio) to explain an uploaded photo or a shapes scene against "
            "prompts typed one per line. The model is loaded once, at start; Gradio's "
            "analytics are off."
        ),
    )
    add_model_options(a, photos=True)
    a.add_argument(
        "--host", default="127.0.0.1", help="address to serve on; 0.0.0.0 serves other machines"
    )
    a.add_argument("--port", type=port_arg, default=7860, help="TCP port")
    a.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    """Build the page and serve it until interrupted."""
    from captum_gscorecam.app import build_app, import_gradio
    from captum_gscorecam.loading import check_model, describe_weights, resolve_device

    try:
        import_gradio()  # before the model loads: a missing extra is said at once
    except ImportError as error:
        raise UsageError(str(error)) from None
    model, pretrained = chosen_model(args)
    with usage_errors():
        check_model(model, pretrained)
        device = resolve_device(args.device)
        loaded = load_chosen_model(args, device)
        page = build_app(model, pretrained, device, loaded=loaded)
    try:
        page.launch(
            server_name=args.host, server_port=args.port, prevent_thread_lock=True, quiet=True
        )
    except OSError as error:
        raise UsageError(
            f"argument --port: cannot serve on {args.host}:{args.port} "
            f"({str(error).splitlines()[0]}); pick another port"
        ) from None
    weights = describe_weights(model, pretrained)
    print(
        f"serving {model} on http://{args.host}:{args.port} ({weights}; Ctrl+C to stop)",
        flush=True,
    )
    signal.signal(signal.SIGTERM, _interrupt)  # stops as Ctrl+C does: the exit cleans up
    page.block_thread()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
