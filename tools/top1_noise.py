"""How much top-1 neighbour agreement a *random* perturbation of the demo's embeddings keeps.

    python tools/top1_noise.py [--n-eval 256] [--seed 0]

The main job's checks ask for mean cosine >= 0.97 and top-1 nearest-neighbour agreement
>= 0.90 on its evaluation sentences (sparsekern.models.text, the stdlib's docstrings). This
script embeds those sentences with the dense all-MiniLM-L6-v2, prints how close each
sentence's best and second-best neighbours are (the top-1 margin), and the top-1 agreement
that isotropic noise (no structure at all) keeps at a given mean cosine. It tells whether a
pruned model's top-1 loss is more than any perturbation of that size would cause.
"""
import argparse

import torch

from sparsekern.models.minilm import embed, load_minilm, tokenize
from sparsekern.models.text import text_splits


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-eval", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    enc, tok = load_minilm()
    # The demo's split: calib 32 + val 32, distill 512, eval 256 (sparsekern.demo.minilm_job).
    sp = text_splits(n_calib=64, n_distill=512, n_eval=a.n_eval, seed=a.seed)
    E = torch.nn.functional.normalize(embed(enc, tokenize(tok, sp.eval, 32)), dim=-1)
    S = E @ E.T
    S.fill_diagonal_(-2.0)
    top2 = S.topk(2, dim=1).values
    margin = top2[:, 0] - top2[:, 1]
    print(f"{len(sp.eval)} evaluation sentences; nearest-neighbour cosine: median "
          f"{float(top2[:, 0].median()):.3f}")
    for th in (0.005, 0.01, 0.02, 0.05):
        print(f"  top-1 margin < {th}: {float((margin < th).float().mean()):.1%} of sentences")
    g = torch.Generator().manual_seed(a.seed)
    print("isotropic noise: mean cosine -> top-1 agreement (median of 5 draws)")
    for eps in (0.05, 0.1, 0.14, 0.17, 0.2, 0.25):
        cos, agree = [], []
        for _ in range(5):
            noise = torch.nn.functional.normalize(torch.randn(E.shape, generator=g), dim=-1)
            O = torch.nn.functional.normalize(E + eps * noise, dim=-1)
            So = O @ O.T
            So.fill_diagonal_(-2.0)
            cos.append(float((O * E).sum(-1).mean()))
            agree.append(float((So.argmax(1) == S.argmax(1)).float().mean()))
        print(f"  cosine {sorted(cos)[2]:.4f} -> top-1 {sorted(agree)[2]:.3f}")


if __name__ == "__main__":
    main()
