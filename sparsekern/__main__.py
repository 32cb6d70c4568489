"""`python -m sparsekern` / the `sparsekern` console script.

Sub-commands:
    demo    (the default) prune the pretrained all-MiniLM-L6-v2 sentence encoder to a target
            speedup with the latency-aware search, recover it by distillation, convert
            it and measure it (``--model mlp``: an MLP on scikit-learn's digits)
    tour    a short run of the API (to_sparse -> spmm -> SparseLinear -> sparsify)
"""
from __future__ import annotations

import argparse
import sys


def _tour(args) -> int:
    import torch

    import sparsekern as sk

    torch.manual_seed(0)
    M, K, N = 512, 1024, 8
    W = torch.randn(M, K)
    W = W * (torch.rand(M, K) > 0.9)  # 90% unstructured zeros
    A = sk.to_sparse(W, layout="csc")
    B = torch.randn(K, N)
    err = (sk.spmm(A, B) - W @ B).abs().max().item()
    print(f"to_sparse: {A}")
    print(f"spmm vs dense: max abs error {err:.2e}")
    lin = torch.nn.Linear(K, M)
    with torch.no_grad():
        lin.weight.copy_(W)
    layer = sk.SparseLinear.from_dense(lin, layout="csc")
    x = torch.randn(N, K)
    print(f"SparseLinear: max abs error {(layer(x) - lin(x)).abs().max().item():.2e}")
    model = sk.sparsify(torch.nn.Sequential(lin, torch.nn.ReLU(), torch.nn.Linear(M, 10)))
    print("sparsify:", {k: v[0] for k, v in model.sparsekern_report.items()})
    return 0


def _with_default_command(argv: list) -> list:
    """``argv`` with "demo" put first when it names no sub-command (it is empty or starts with
    a demo option). A first word that is not an option is left for argparse to check: an
    unknown sub-command ("sparsekern bogus") is an error listing the valid ones (exit 2)."""
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        return ["demo"] + argv
    return argv


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="sparsekern", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    from .demo import add_arguments, check_arguments
    commands = {"demo": sub.add_parser("demo", help="prune a model to a target speedup and "
                                       "measure it (the default)"),
                "tour": sub.add_parser("tour", help="a short run of the API")}
    add_arguments(commands["demo"])
    argv = _with_default_command(list(sys.argv[1:] if argv is None else argv))
    # parse_known_args: an unknown option of a sub-command is reported with that
    # sub-command's usage ("usage: sparsekern demo ..."), not the top-level one
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        commands.get(args.command, parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command == "demo":
        check_arguments(commands["demo"], args)
        from .demo import main as demo_main
        return demo_main(args)
    if args.command == "tour":
        return _tour(args)
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
