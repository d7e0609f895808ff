"""PyTorch hand-off: a random-window training loop over the demo, read through the service
by two DataLoader workers (one connection each), in cache-friendly runs.

The toy task: a small 1-D CNN learns each window's per-channel log power from the raw
window. Windows that touch the gap are NaN there; nan_to_num turns them into zeros.

    python examples/torch_windows.py [--port 18861] [--steps 40]
"""
from __future__ import annotations

if __name__ == "__main__" and not __package__:
    from _handoff_demo import reexec_as_module
    reexec_as_module("torch_windows")

from examples._handoff_demo import demo_server, parser


def scale_window(window):
    """NaN -> 0, microvolts -> about unit variance, float32 (runs in the workers)."""
    import torch
    return torch.nan_to_num(window).float() / 50.0


def main(argv=None) -> int:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=40, help="training steps")
    p.add_argument("--window", type=float, default=4.0, help="window seconds")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    args = p.parse_args(argv)
    import torch
    from torch.utils.data import DataLoader

    from software.handoff import BlockRunSampler, WindowDataset

    torch.manual_seed(0)
    with demo_server(args) as address:
        data = WindowDataset(address, args.session, args.window, stride_seconds=1.0,
                             transform=scale_window)
        print(data)
        loader = DataLoader(data, batch_size=16, num_workers=args.workers,
                            sampler=BlockRunSampler(data, run_seconds=64, seed=0))
        n_ch = len(data.channels)
        model = torch.nn.Sequential(
            torch.nn.Conv1d(n_ch, 32, kernel_size=9, stride=4), torch.nn.ReLU(),
            torch.nn.Conv1d(32, 32, kernel_size=9, stride=4), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten(), torch.nn.Linear(32, n_ch))
        optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
        step = 0
        first = last = None
        while step < args.steps:
            for batch in loader:            # leaving the loop ends this epoch's workers
                target = torch.log(batch.pow(2).mean(dim=2) + 1e-3)
                loss = torch.nn.functional.mse_loss(model(batch), target)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                last = loss.item()
                first = last if first is None else first
                step += 1
                if step % 10 == 0:
                    print(f"step {step:3d}  loss {last:.4f}")
                if step >= args.steps:
                    break
    print(f"loss {first:.4f} -> {last:.4f} over {step} steps of 16 windows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
