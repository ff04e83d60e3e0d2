"""W_ih and W_hh packed once and kept between inference calls (csrc fr_pack_recurrent),
instead of packed by the kernel on every call: 3% of an LSTM B=1 T=150
H=256 call, 10-30% of the short ones a server makes.

A stack keeps its packs only after keep_packed_weights(); they stay valid
while the parameter buffer is not written. Every write path of the package
calls written(buffer) (an optimizer step, load_state_dict, reset_parameters,
a training forward, _quantize.forget), which bumps the buffer's version and
so drops the packs made before. A direct write into params or flat_params
must call it too. The kernel checks each pack was made for the call's weight
arrays, layout and team, so a pack of the wrong shape costs a pack per call,
never a wrong result."""

import threading
import weakref

from fastrnn import _kernels

_VERSIONS = {}  # id of a parameter buffer's owning array -> its count of writes
_LOCK = threading.Lock()


def _owner(flat):
    """The array that owns flat's memory (a stack's buffer is often a view of
    its network's)."""
    while getattr(flat, "base", None) is not None and hasattr(flat.base, "base"):
        flat = flat.base
    return flat


def written(flat):
    """flat's values changed: drop the packs made from them."""
    owner = _owner(flat)
    key = id(owner)
    with _LOCK:
        if key not in _VERSIONS:  # forgotten with the buffer, before its id is reused
            weakref.finalize(owner, _VERSIONS.pop, key, None)
        _VERSIONS[key] = _VERSIONS.get(key, 0) + 1


def version(flat):
    return _VERSIONS.get(id(_owner(flat)), 0)


class PackedWeights:
    """A stack's packs, keyed by (direction index, the kernel's pack key), for
    one version of its parameter buffer; a second dict finds them again by the
    call's (direction index, B, I, n_threads) without asking the kernel for
    its key (microseconds of a serving call). Not pickled or copied: a copy's
    weights live elsewhere (the packs name their W_hh's address)."""

    def __init__(self):
        # (version, packs, packs by call), replaced as one: a reader in another
        # thread never pairs a version with another version's packs
        self._kept = (None, {}, {})

    def __reduce__(self):
        return (PackedWeights, ())

    @property
    def packs(self):
        return self._kept[1]

    def get(self, flat, view, cell, B, I, n_threads):
        """view's W_ih and W_hh packed for a batch of B rows, I inputs on n_threads."""
        now = version(flat)
        kept_version, packs, by_call = self._kept
        if kept_version != now:
            packs, by_call = {}, {}
            self._kept = (now, packs, by_call)
        call = (view.index, B, I, n_threads)
        pack = by_call.get(call)
        if pack is None:
            key = (view.index, _kernels.pack_key(cell=cell, B=B, I=I, W_hh=view.W_hh,
                                                 n_threads=n_threads))
            pack = packs.get(key)
            if pack is None:
                pack = packs[key] = _kernels.pack_recurrent(cell=cell, B=B, I=I,
                                                            W_ih=view.W_ih, W_hh=view.W_hh,
                                                            n_threads=n_threads)
            by_call[call] = pack
        return pack
