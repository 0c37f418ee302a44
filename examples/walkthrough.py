"""A walk through minifcrn: generated cells -> an FCRN trained step by step -> counts,
detections, and what a layer keeps (feature inversion).  Runs on a CPU in a few minutes:

    python examples/walkthrough.py [--out walkthrough] [--steps 300] [--quick]

``--quick`` (a few seconds of training, used by the tests) shows every step but
learns little.  Read the code from top to bottom: each step names the module
that does it, so you know where to look next.
"""
import argparse
import time
from pathlib import Path

import numpy as np

import minifcrn as mf
from minifcrn import functional as F
from minifcrn import optim
from minifcrn.counting import count
from minifcrn.data.annotations import density_map
from minifcrn.data.samples import random_patch
from minifcrn.evaluate import f1_scores, match_detections
from minifcrn.invert import reconstruct
from minifcrn.models import FCRN_A
from minifcrn.synth import SynthConfig, SyntheticSamples, generate
from minifcrn.viz import colormap, render_count, render_inversion, render_panels


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="walkthrough", help="folder for the pictures")
    parser.add_argument("--steps", type=int, default=300, help="training steps (batches of 8 patches)")
    parser.add_argument("--quick", action="store_true", help="a short run that shows every step")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    steps, batch, patch, iters = (8, 2, 32, 10) if args.quick else (args.steps, 8, 96, 150)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)

    # 1. Data (minifcrn.synth): fluorescence nuclei with their exact centres, made on the fly.
    #    Each training sample is a patch with its density target (minifcrn.data): a Gaussian
    #    of sigma 2 at every centre, times 100, so the patch's integral / 100 is its count.
    samples = SyntheticSamples(200, SynthConfig(), seed=0)
    first = samples[0]
    target = density_map(first.points, first.image.shape)
    render_panels([("a generated image", f"{first.count} nuclei", first.image),
                   ("its density target", f"integral / 100 = {target.sum() / 100:.1f}", colormap(target))],
                  out / "target.png", min_side=256)
    pairs = [random_patch(first, patch, rng) for _ in range(3)]
    render_panels([panel for k, (p, t) in enumerate(pairs) for panel in (
        (f"patch {k + 1}", "rotated, flipped", p), (f"target {k + 1}", f"{t.sum() / 100:.1f} cells", colormap(t)))],
        out / "patches.png", min_side=128)
    print(f"1. generated images: {first.image.shape[1]}x{first.image.shape[0]}, e.g. {first.count} nuclei; "
          f"the training target and patch/target pairs: {out / 'target.png'}, {out / 'patches.png'}")

    # 2. The network (minifcrn.models): FCRN-A, a plain list of named layers.
    net = FCRN_A(rng=0).to(args.device)
    print(f"2. FCRN-A: {net.num_parameters():,} parameters in {len(net.layers)} layers: "
          f"{' > '.join(net.layer_names[:6])} > ...")

    # 3. Training, written out (minifcrn.train.fit does this with validation and checkpoints):
    #    forward, MSE loss, backward through every op's hand-written gradient, then SGD as the
    #    paper's eq. 3: delta = 0.9 delta + 0.1 lr (grad + 5e-4 w); w -= delta.
    opt = optim.SGD(net.parameters(), lr=0.3, momentum=0.9, weight_decay=5e-4)
    t0, losses = time.perf_counter(), []
    for step in range(1, steps + 1):
        pairs = [random_patch(samples[rng.integers(len(samples))], patch, rng) for _ in range(batch)]
        x = mf.tensor(np.stack([p for p, _ in pairs])[:, None], device=args.device)
        y = mf.tensor(np.stack([t for _, t in pairs])[:, None], device=args.device)
        opt.zero_grad()
        loss = F.mse_loss(net(x), y)
        loss.backward()              # the graph is released as it is used
        opt.step()
        losses.append(loss.item())
        if step == int(0.8 * steps):
            opt.lr /= 10             # the learning rate cut of the paper
        if step % max(1, steps // 6) == 0 or step == steps:
            print(f"3. step {step:4d}/{steps}  loss {loss.item():.4f}  ({time.perf_counter() - t0:.0f} s)")
    loss_curve(losses, int(0.8 * steps), out / "loss.png")

    # 4. Counting and detection (minifcrn.count) on images the network never saw: the count is the
    #    density's integral, the detections its local maxima; matched to the truth within 5 px.
    errors, matched, found, true = [], 0, 0, 0
    for seed in range(1000, 1003):
        made = generate(SynthConfig(), seed)
        result = count(made.image, net, device=args.device)
        errors.append(result.count - made.count)
        matched += match_detections(result.detections, made.points, radius=5)
        found, true = found + len(result.detections), true + made.count
    precision, recall, f1 = f1_scores(matched, found, true)
    print(f"4. counts on 3 new images: errors {', '.join(f'{e:+.1f}' for e in errors)} cells; "
          f"detection precision {precision:.2f}, recall {recall:.2f}, F1 {f1:.2f}")
    render_count(result, out / "count.png", truth=made.points,
                 title=f"{result.count:.1f} cells (truth {made.count}, circled), {len(result.detections)} "
                       f"detections: the FCRN-A trained above, {steps} steps")

    # 5. Seeing inside (minifcrn.invert, paper section 5): start from noise and descend on the
    #    *input* until conv1's (then conv3's) features match those of a real crop.  The
    #    correlation says how much of the image each layer keeps.
    crop = made.image[:48, :48]
    rebuilt = [reconstruct(net, crop, layer, iterations=iters, device=args.device) for layer in ("conv1", "conv3")]
    for r in rebuilt:
        print(f"5. {r.layer}: objective {r.objective[0]:.3f} -> {r.objective[-1]:.4f}, "
              f"reconstruction correlates {r.correlation:.2f} with the input")
    render_inversion(crop.astype(np.float32), rebuilt, out / "inversion.png")
    print(f"pictures: {out / 'count.png'} (detections, density), {out / 'inversion.png'} (reconstructions)")


def loss_curve(losses, cut, path):
    """The training loss against the step (matplotlib, the viz extra; without it, a note)."""
    from minifcrn.figures import matplotlib_or_note, new_figure, save_png

    if not matplotlib_or_note():
        return
    fig = new_figure(5, 3)
    ax = fig.subplots()
    ax.plot(range(1, len(losses) + 1), losses, lw=1)
    ax.axvline(cut, color="0.6", ls="--", label="lr / 10")
    ax.set(xlabel="step", ylabel="MSE loss (batch)", yscale="log", title="training loss")
    ax.legend(fontsize=8)
    save_png(fig, path)
    print(f"3. the loss curve: {path}")


if __name__ == "__main__":
    main()
