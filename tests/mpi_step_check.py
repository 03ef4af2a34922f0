"""Run under mpirun: one DDP step on N ranks equals one single-process step on the same global batch.

Prints one JSON line from rank 0: the largest relative parameter difference for SGD and Adam,
and whether the parameters are bitwise identical on every rank.
"""

import copy
import json

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from hpcvsr import dist
from hpcvsr.io import checkpoint
from hpcvsr.models import build
from hpcvsr.training import trainer

env = dist.init("cpu")
GLOBAL = 8
per = trainer.per_rank_batch(GLOBAL, env.world)
gen = torch.Generator().manual_seed(1)
x = torch.rand(GLOBAL, 1, 12, 12, generator=gen, dtype=torch.float64)
y = torch.rand(GLOBAL, 1, 24, 24, generator=gen, dtype=torch.float64)
mine = slice(env.rank * per, (env.rank + 1) * per)
out = {}
for opt_name in ("sgd", "adam"):
    torch.manual_seed(0)
    model = build("climate_fsrcnn", 2).double()
    torch.nn.init.normal_(model.recon.weight, std=0.05)
    ref = copy.deepcopy(model)
    make = (lambda ps: torch.optim.SGD(ps, lr=0.1)) if opt_name == "sgd" else (lambda ps: torch.optim.Adam(ps, lr=1e-3))
    opt = make(model.parameters())
    trainer.train_step(DDP(model), opt, x[mine], y[mine])
    hashes = [None] * env.world
    torch.distributed.all_gather_object(hashes, checkpoint.state_hash(model.state_dict()))
    if env.is_root:
        opt_ref = make(ref.parameters())
        before = {k: v.clone() for k, v in ref.state_dict().items()}
        trainer.train_step(ref, opt_ref, x, y)
        rel = 0.0
        for (k, a), b in zip(model.state_dict().items(), ref.state_dict().values()):
            step = (b - before[k]).abs().max().item()
            if step > 0:
                rel = max(rel, (a - b).abs().max().item() / step)
        moved = any(not torch.equal(b, before[k]) for k, b in ref.state_dict().items())
        out[opt_name] = {"max_rel_diff_of_update": rel, "params_moved": moved, "ranks_bitwise_equal": len(set(hashes)) == 1}
if env.is_root:
    print("RESULT " + json.dumps(out), flush=True)
env.barrier()  # every rank done with its collectives, then end as the entry points do (dist.launch)
dist.shutdown(env)
dist.exit_process(0)
