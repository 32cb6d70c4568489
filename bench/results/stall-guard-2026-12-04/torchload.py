import os, torch
os.nice(19)
torch.set_num_threads(2)
a = torch.randn(256, 256); b = torch.randn(256, 256)
while True:
    for _ in range(50): a @ b
    torch.nn.functional.linear(torch.randn(8, 1024), torch.randn(1024, 1024))
