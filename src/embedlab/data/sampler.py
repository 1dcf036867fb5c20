"""Batch sampling that shards across DDP processes itself and can keep every text unique within a batch."""

import logging
import random
from collections import Counter
from collections.abc import Callable

from torch.utils.data import Sampler

log = logging.getLogger(__name__)


class ShardedBatchSampler(Sampler[list[int]]):
    """Shuffled batches of row indices for one process out of `world_size`.

    All processes plan the same global batches of `batch_size * world_size` rows (same seed, same epoch) and each
    takes its own slice, so in-batch negatives gathered across processes come from one coherent global batch.
    With `unique_texts`, no text appears twice in a global batch: for in-batch negatives a repeated premise
    would be a false negative. A text on more rows than the epoch has batches (one MedQuAD answer stands on 282)
    cannot fit them all: the pass ends in a tail of one-row batches, each a row that clashes with every other row
    left. Such a batch contrasts with nothing, and a run of them stretches the learning-rate schedule, so the epoch
    ends at the first one (unless it is the only batch), with a warning that counts the rows left out. Every epoch
    reshuffles, so each leaves out other copies. Under DDP a short last global batch is dropped so every process
    steps together.

    With `group_by_length`, each run of `length_group_batches` global batches of the shuffled order is sorted by
    length (characters of all the row's texts) before it is cut into batches, and the batches are then shuffled:
    a batch holds texts of similar length, so dynamic padding pads little, while which lengths train when stays
    random. Uniqueness, sharding and the resume skip work on these batches as on plain ones.
    """

    def __init__(self, row_texts: list[tuple[str, ...]], batch_size: int, unique_texts: bool, seed: int = 0,
                 rank: int = 0, world_size: int = 1, drop_last: bool = False,
                 batches_done: Callable[[int], int] | None = None, group_by_length: bool = False,
                 length_group_batches: int = 50):
        super().__init__()
        if length_group_batches < 1:
            raise ValueError(f"length_group_batches must be at least 1, got {length_group_batches}")
        self.row_texts = row_texts
        self.batch_size = batch_size
        self.unique_texts = unique_texts
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last or world_size > 1
        self.epoch = 0
        # Given an epoch, how many of its batches an interrupted run already trained on: a resumed run skips them.
        self.batches_done = batches_done
        self.group_by_length = group_by_length
        self.length_group_batches = length_group_batches
        self._planned: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def sampler(self) -> "ShardedBatchSampler":
        # Lightning calls set_epoch on `dataloader.batch_sampler.sampler`, never on the batch sampler itself; without
        # this every epoch would repeat the first epoch's order.
        return self

    def __iter__(self):
        skip = self.batches_done(self.epoch) if self.batches_done is not None else 0
        yield from self._plan()[skip:]

    def __len__(self) -> int:
        return len(self._plan())

    def _plan(self) -> list[list[int]]:
        if self._planned is None or self._planned[0] != self.epoch:
            self._planned = (self.epoch, self._local_batches())
        return self._planned[1]

    def _local_batches(self) -> list[list[int]]:
        order = list(range(len(self.row_texts)))
        rng = random.Random(self.seed + self.epoch)
        rng.shuffle(order)
        global_size = self.batch_size * self.world_size
        if self.group_by_length:
            order = self._sorted_within_groups(order, global_size * self.length_group_batches)
        batches = self._unique_batches(order, global_size) if self.unique_texts else [
            order[start:start + global_size] for start in range(0, len(order), global_size)]
        if self.group_by_length:
            rng.shuffle(batches)
        if self.drop_last:
            batches = [batch for batch in batches if len(batch) == global_size]
        start = self.rank * self.batch_size
        return [batch[start:start + self.batch_size] for batch in batches if batch[start:start + self.batch_size]]

    def _sorted_within_groups(self, order: list[int], group_size: int) -> list[int]:
        def length(index: int) -> int:
            return sum(len(text) for text in self.row_texts[index])

        return [index for start in range(0, len(order), group_size)
                for index in sorted(order[start:start + group_size], key=length, reverse=True)]

    def _unique_batches(self, order: list[int], size: int) -> list[list[int]]:
        batches = []
        remaining = order
        while remaining:
            batch, seen, deferred = [], set(), []
            position = 0
            for position, index in enumerate(remaining):
                texts = self.row_texts[index]
                if seen.isdisjoint(texts):
                    batch.append(index)
                    seen.update(texts)
                    if len(batch) == size:
                        break
                else:
                    deferred.append(index)
            if len(batch) == 1 < size and batches:
                break
            batches.append(batch)
            remaining = deferred + remaining[position + 1:]
        if remaining:
            self._warn_left_out(remaining, len(batches))
        return batches

    def _warn_left_out(self, left_out: list[int], batch_count: int) -> None:
        text, rows = Counter(text for index in left_out for text in set(self.row_texts[index])).most_common(1)[0]
        log.warning("epoch %d: %d of %d rows left out, as each would be a batch of its own, clashing with every "
                    "other row left (the commonest text: %r, on %d of them); %d batches without duplicate texts", self.epoch,
                    len(left_out), len(self.row_texts), text[:60], rows, batch_count)
