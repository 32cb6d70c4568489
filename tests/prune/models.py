"""Small models and scikit-learn's digits data (ships with the package, no download)."""
import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self, hidden=(256, 128)):
        super().__init__()
        self.fc1 = nn.Linear(64, hidden[0])
        self.fc2 = nn.Linear(hidden[0], hidden[1])
        self.fc3 = nn.Linear(hidden[1], 10)

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


class CNN(nn.Module):
    """conv-bn-relu x2, maxpool, flatten, two linears: inputs [N, 1, 8, 8]."""

    def __init__(self, c1=16, c2=32, hidden=64):
        super().__init__()
        self.conv1 = nn.Conv2d(1, c1, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(c1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(c2)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(c2 * 16, hidden)
        self.fc2 = nn.Linear(hidden, 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.pool(torch.relu(self.bn2(self.conv2(x))))
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))


class Digits:
    """Digits split 1400 train / 397 test; flat [N, 64] or image [N, 1, 8, 8] inputs."""

    def __init__(self):
        from sklearn.datasets import load_digits
        d = load_digits()
        self.X = torch.tensor(d.data, dtype=torch.float32) / 16.0
        self.y = torch.tensor(d.target)
        perm = torch.randperm(len(self.X), generator=torch.Generator().manual_seed(0))
        self.train_idx, self.test_idx = perm[:1400], perm[1400:]

    def inputs(self, idx, image):
        x = self.X[idx]
        return x.reshape(-1, 1, 8, 8) if image else x

    def loader(self, split, image, batch_size=64, seed=0):
        idx = self.train_idx if split == "train" else self.test_idx
        ds = torch.utils.data.TensorDataset(self.inputs(idx, image), self.y[idx])
        return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=split == "train",
                                           generator=torch.Generator().manual_seed(seed))

    def calib(self, image, n=256):
        return self.inputs(self.train_idx[:n], image)
