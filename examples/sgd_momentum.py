"""SGD with heavy-ball momentum and decoupled weight decay: the README's bring-your-own example."""
import torch


class SGDMomentum(torch.optim.Optimizer):
    """SGD with heavy-ball (or Nesterov) momentum and decoupled weight decay."""

    def __init__(self, params, lr: float = 0.05, momentum: float = 0.9, weight_decay: float = 0.0,
                 nesterov: bool = False):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else torch.enable_grad()(closure)()
        for group in self.param_groups:
            lr, beta = group["lr"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].setdefault("momentum", torch.zeros_like(p))
                buf.mul_(beta).add_(p.grad)
                update = p.grad.add(buf, alpha=beta) if group["nesterov"] else buf
                p.mul_(1 - lr * group["weight_decay"]).add_(update, alpha=-lr)
        return loss
