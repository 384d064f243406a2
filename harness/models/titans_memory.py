"""Titans' neural long-term memory (Behrouz et al. 2025): an MLP learned at test time.

The memory ``M`` is a small MLP (one linear map, or two with a SiLU between) whose weights are
per sequence and change during the forward pass. Each token writes by one step of gradient
descent on the associative loss ``l(M; k, v) = ||M(k) - v||^2`` ("surprise"), with momentum
``eta`` and a forgetting gate ``alpha``; the three gates are per token, computed from the token::

    S_t = eta_t S_{t-1} - theta_t grad l(M_{t-1}; k_t, v_t)
    M_t = (1 - alpha_t) M_{t-1} + S_t

Tokens are taken in chunks: inside a chunk every gradient is taken at the chunk's starting
weights (the paper's parallel form), so a chunk's update is a few matrix products. The step
size is ``theta_t / chunk_size`` with ``theta_t`` at most twice ``mem_lr``: the chunk's
summed gradient is then a mean, and the outer loop cannot grow the step without bound. Each
gradient is an outer product, and the recurrence is linear, so the chunk's end state is
``M_C = a M_0 + b S_0 - sum_i c_i g_i`` with scalar ``a, b, c_i`` from the gates: no per-token
weights are materialised. With ``chunk_size=1`` this is the exact token-by-token rule.
Reading (``M(q)``) uses the weights at the start of the reader's chunk, so no token sees a later
one. Queries and keys are L2-normalised, as in the paper.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# A memory state: (weights, momenta), each a list of (B, in, out) tensors, one per layer.
State = tuple[list[Tensor], list[Tensor]]
# A forward pass of the memory MLP: output, each layer's input, each hidden pre-activation.
Forward = tuple[Tensor, list[Tensor], list[Tensor]]


def mlp_forward(weights: list[Tensor], k: Tensor) -> Forward:
    """M(k) for k (B, C, in), the input each layer read and each hidden layer's pre-activation
    (kept for the gradient). Hidden activations are scaled by 1/sqrt(width), so every layer
    reads an input of norm ~1 (keys are unit vectors): the loss's curvature, and so the stable
    step size, does not grow with the memory's width."""
    inputs, pre, h = [], [], k
    for i, w in enumerate(weights):
        inputs.append(h)
        h = h @ w
        if i < len(weights) - 1:
            pre.append(h)
            h = F.silu(h) * w.shape[-1] ** -0.5
    return h, inputs, pre


def grad_factors(weights: list[Tensor], v: Tensor, forward: Forward) -> list[tuple[Tensor, Tensor]]:
    """Per-token gradients of ||M(k) - v||^2 as outer products, from ``forward`` = M's forward
    pass on k: for layer j the gradient of token i is ``left[:, i]^T right[:, i]`` (left
    (B, C, in), right (B, C, out))."""
    out, inputs, pre = forward
    delta = 2 * (out - v)  # d loss / d output of the last layer
    factors = []
    for j in range(len(weights) - 1, -1, -1):
        factors.append((inputs[j], delta))
        if j:
            z = pre[j - 1]  # pre-activation that produced inputs[j]
            s = torch.sigmoid(z)
            silu_grad = s * (1 + z * (1 - s))
            delta = (delta @ weights[j].transpose(1, 2)) * silu_grad * z.shape[-1] ** -0.5
    return factors[::-1]


def chunk_update(state: State, k: Tensor, v: Tensor, log_eta: Tensor, log_keep: Tensor,
                 theta: Tensor, forward: Forward | None = None) -> State:
    """The state after one chunk of tokens (k, v (B, C, d); gates (B, C)): every gradient at
    the chunk's starting weights, then momentum and decay token by token, in closed form.

    ``log_eta`` = log eta_t, ``log_keep`` = log(1 - alpha_t), ``theta`` the step sizes;
    ``forward``, the memory's forward pass on k at the chunk's start, if already taken."""
    weights, moms = state
    L = log_eta.cumsum(1)  # L_t = log prod_{j<=t} eta_j
    A = log_keep.cumsum(1)
    # F[i, t] = prod_{i<j<=t} eta_j for t >= i (0 otherwise)
    C = k.shape[1]
    upper = torch.ones(C, C, dtype=torch.bool, device=k.device).triu()
    diff = L[:, None, :] - L[:, :, None]  # [b, i, t] = L_t - L_i
    Fm = torch.where(upper, diff, torch.full_like(diff, -math.inf)).exp()
    beta = (A[:, -1:] - A).exp()  # prod_{j>t} (1 - alpha_j)
    keep_all = A[:, -1].exp()  # prod_t (1 - alpha_t)
    c_w = theta * (Fm * beta[:, None, :]).sum(-1)  # weight on g_i in M_C
    c_s = theta * (L[:, -1:] - L).exp()  # weight on g_i in S_C
    b_w = (beta * L.exp()).sum(1)  # weight on S_0 in M_C
    b_s = L[:, -1].exp()  # weight on S_0 in S_C
    new_w, new_s = [], []
    coef = -torch.stack([c_w, c_s], dim=2).to(k.dtype)  # (B, C, 2); minus: a descent step
    factors = grad_factors(weights, v, forward or mlp_forward(weights, k))
    for w, s, (left, right) in zip(weights, moms, factors):
        # the weighted gradient sums are (B, in, C) @ (B, C, out), added by the same product
        left_w, left_s = ((left * c[..., None]).transpose(1, 2) for c in coef.unbind(2))
        kept = torch.addcmul(keep_all[:, None, None] * w, b_w[:, None, None], s)
        new_w.append(torch.baddbmm(kept, left_w, right))
        new_s.append(torch.baddbmm(b_s[:, None, None] * s, left_s, right))
    return new_w, new_s


class NeuralMemory(nn.Module):
    """Projections, gates and the learned initial weights of a neural long-term memory."""

    def __init__(self, d_model: int, hidden: int, depth: int, chunk_size: int, lr: float,
                 momentum: float, decay: float):
        super().__init__()
        self.chunk_size = chunk_size
        self.norm = nn.LayerNorm(d_model)
        self.q = nn.Linear(d_model, d_model, bias=False)
        self.k = nn.Linear(d_model, d_model, bias=False)
        self.v = nn.Linear(d_model, d_model, bias=False)
        self.gates = nn.Linear(d_model, 3)  # step size theta, momentum eta, decay alpha
        self.max_lr = lr  # theta = 2 lr sigmoid(.): lr at the start, never above 2 lr
        self.init_gates = (0.5, momentum, decay)
        dims = [d_model] + [hidden] * (depth - 1) + [d_model]
        # M_0, the weights every sequence starts from: learned by the outer loop. Every layer
        # reads an input of norm ~1 (mlp_forward), so unit-variance weights give outputs ~1.
        self.init = nn.ParameterList(
            nn.Parameter(torch.randn(a, b)) for a, b in zip(dims, dims[1:]))
        self.reset_gates()

    def reset_gates(self) -> None:
        """Gates start at the configured values whatever the token (init_weights zeroes only
        Linear biases, so the model calls this after it)."""
        nn.init.zeros_(self.gates.weight)
        with torch.no_grad():
            self.gates.bias.copy_(torch.tensor([math.log(p / (1 - p)) for p in self.init_gates]))

    def initial(self, batch: int, carried: State | None = None) -> State:
        """The state a call starts from: M_0, or M_0 plus what earlier calls wrote (their
        ``written`` part, with their momenta), so M_0 is trained in every call."""
        if carried is not None:
            return [w + d for w, d in zip(self.init, carried[0])], list(carried[1])
        weights = [w.expand(batch, -1, -1) for w in self.init]
        return weights, [torch.zeros_like(w) for w in weights]

    def written(self, state: State) -> State:
        """What the calls wrote on top of M_0, detached: the part carried to the next call."""
        return ([(w - w0).detach() for w, w0 in zip(state[0], self.init)],
                [s.detach() for s in state[1]])

    def read(self, state: State, x: Tensor) -> Tensor:
        """M(q) for the tokens x (B, L, D), with the weights of ``state``."""
        q = F.normalize(self.q(self.norm(x)), dim=-1)
        return mlp_forward(state[0], q)[0]

    def write(self, state: State, x: Tensor) -> State:
        """The state after the tokens x (B, L, D) wrote to it, chunk by chunk."""
        for k, v, *gates in self.chunks(*self.keys_values(self.norm(x))):
            state = chunk_update(state, k, v, *gates)
        return state

    def scan(self, state: State, x: Tensor) -> tuple[Tensor, State]:
        """Read then write each chunk of x in turn: the reads of all tokens and the end state.
        Projections and gates are per token, so they are taken once for the whole of x; each
        chunk's read and its keys go through the memory MLP in one pass (same weights)."""
        h = self.norm(x)
        q = F.normalize(self.q(h), dim=-1)
        reads = []
        for q_c, k, v, *gates in self.chunks(q, *self.keys_values(h)):
            n = q_c.shape[1]
            out, inputs, pre = mlp_forward(state[0], torch.cat([q_c, k], dim=1))
            read, out = out.split(n, dim=1)
            reads.append(read)
            forward = out, [k, *(t[:, n:] for t in inputs[1:])], [z[:, n:] for z in pre]
            state = chunk_update(state, k, v, *gates, forward=forward)
        return torch.cat(reads, dim=1), state

    def chunks(self, *per_token: Tensor):
        """Each of the (B, L, ...) tensors cut into chunks, chunk by chunk. ``split``, not a
        slice per chunk: its backward is one concatenation, where each slice's would fill a
        zero tensor as long as the whole sequence."""
        return zip(*(t.split(self.chunk_size, dim=1) for t in per_token))

    def keys_values(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Keys, values and the gates (log eta, log(1 - alpha), theta) of normalised tokens h."""
        k, v = F.normalize(self.k(h), dim=-1), self.v(h)
        a = self.gates(h).float()
        # theta at most 2 mem_lr, divided by chunk_size: a chunk sums its tokens' gradients,
        # so a chunk of similar keys would otherwise take chunk_size times the step, and a
        # step the outer loop could grow without bound would make the memory diverge
        theta = 2 * self.max_lr * a[..., 0].sigmoid() / self.chunk_size
        return k, v, F.logsigmoid(a[..., 1]), F.logsigmoid(-a[..., 2]), theta

