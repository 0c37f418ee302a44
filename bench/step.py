"""FCRN training step, batch 8 of 96x96: ours vs PyTorch in one process (a quick check; bench/cpu.py is the full benchmark).

    python bench/step.py [fcrn-a|fcrn-b]
"""
import numpy as np, time, sys
import minifcrn as mf, minifcrn.functional as F  # first: OMP_WAIT_POLICY=PASSIVE then holds for
import torch  # both libraries (Numba's OpenMP is PyTorch's once torch is loaded; torch's step moved <3%)
from minifcrn.models import FCRN
from minifcrn import optim
arch = sys.argv[1] if len(sys.argv) > 1 else "fcrn-a"
m = FCRN(arch); opt = optim.SGD(m.parameters(), lr=0.01)
x = mf.tensor(np.random.rand(8,1,96,96), dtype=np.float32); y = mf.tensor(np.random.rand(8,1,96,96), dtype=np.float32)
def step():
    opt.zero_grad(); l = F.mse_loss(m(x), y); l.backward(); opt.step()
step(); step()
ts=[]
for _ in range(5):
    t=time.perf_counter(); step(); ts.append(time.perf_counter()-t)
print(arch, 'step median', np.median(ts))

torch.set_num_threads(2)
tm = torch.nn.Sequential(*[l for l in [
 torch.nn.Conv2d(1,32,3,padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
 torch.nn.Conv2d(32,64,3,padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
 torch.nn.Conv2d(64,128,3,padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
 torch.nn.Conv2d(128,512,3,padding=1), torch.nn.ReLU(), torch.nn.Upsample(scale_factor=2, mode='bilinear'),
 torch.nn.Conv2d(512,128,3,padding=1), torch.nn.ReLU(), torch.nn.Upsample(scale_factor=2, mode='bilinear'),
 torch.nn.Conv2d(128,64,3,padding=1), torch.nn.ReLU(), torch.nn.Upsample(scale_factor=2, mode='bilinear'),
 torch.nn.Conv2d(64,32,3,padding=1), torch.nn.ReLU(), torch.nn.Conv2d(32,1,1)]])
topt = torch.optim.SGD(tm.parameters(), lr=0.01, momentum=0.9)
tx = torch.tensor(x.numpy()); ty = torch.tensor(y.numpy())
def tstep():
    topt.zero_grad(); l = torch.nn.functional.mse_loss(tm(tx), ty); l.backward(); topt.step()
tstep(); tstep(); ts=[]
for _ in range(5):
    t=time.perf_counter(); tstep(); ts.append(time.perf_counter()-t)
print('torch step median', np.median(ts))
