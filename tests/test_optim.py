import lightning as L
import pytest
import torch

from embedlab.errors import ConfigError
from embedlab.objectives.optim import (
    OptimizedModule,
    check_schedule,
    linear_warmup_constant,
    linear_warmup_decay,
)


def test_linear_schedule_warms_up_then_decays_to_zero():
    factors = [linear_warmup_decay(step, warmup=2, total=6) for step in range(7)]
    assert factors == [0.0, 0.5, 1.0, 0.75, 0.5, 0.25, 0.0]


def test_constant_schedule_warms_up_then_holds_the_full_rate():
    assert [linear_warmup_constant(step, warmup=2, total=6) for step in range(7)] == [0.0, 0.5, 1, 1, 1, 1, 1]
    assert [linear_warmup_constant(step, warmup=0, total=3) for step in range(3)] == [1, 1, 1]


def test_an_unknown_schedule_fails_naming_the_known_ones():
    with pytest.raises(ConfigError, match="optim.schedule must be one of linear, constant, got 'cosine'"):
        check_schedule("cosine")


class LargeGradients(OptimizedModule):
    """A linear layer whose loss has gradients far above the clip value; records what each step received."""

    def __init__(self):
        super().__init__(lr=1e-3, warmup_ratio=0.0)
        self.layer = torch.nn.Linear(8, 8)
        self.seen = []

    def training_step(self, batch, batch_idx):
        return (self.layer(batch[0]) * 1000).pow(2).mean()

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
        optimizer.step(closure=optimizer_closure)
        # Clipping runs between the closure and the update, and the update leaves the gradients as they were.
        norms = torch.stack([torch.linalg.vector_norm(p.grad) for p in self.parameters()])
        self.seen.append((optimizer.defaults["fused"], torch.linalg.vector_norm(norms).item()))


@pytest.mark.parametrize("algorithm, bound", [("norm", 0.5), ("value", 0.5 * (8 * 8 + 8) ** 0.5)])
def test_bf16_mixed_training_steps_with_the_fused_optimizer_and_clips(algorithm, bound):
    module = LargeGradients()
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(6, 8)), batch_size=2)
    trainer = L.Trainer(accelerator="cpu", precision="bf16-mixed", max_steps=3, gradient_clip_val=0.5,
                        gradient_clip_algorithm=algorithm, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, data)
    assert len(module.seen) == 3
    for fused, norm in module.seen:
        assert fused is True and norm <= bound + 1e-4
