# BLAS held to one thread around kernel calls (fastrnn._threads.single_threaded_blas),
# included by _kernels.pyx. In C so that a layer call on its own pays well under a
# microsecond for it: a standalone layer call sets and restores the thread count of
# every BLAS library loaded (numpy's and scipy's OpenBLAS in the wheels).
from libc.stdint cimport uintptr_t

ctypedef int (*_get_threads_fn)() noexcept nogil
ctypedef void (*_set_threads_fn)(int) noexcept nogil

cdef enum:
    _MAX_C_LIBRARIES = 8


cdef class BlasLimit:
    """A re-entrant, thread-safe BLAS limit: nested or concurrent blocks share
    one limit to 1 thread, set when the first enters and restored when the last
    leaves (a training loop pays for it once). A library's thread count is
    read and set through its C functions when it has plain ones
    (``add_c_library``: addresses of ``int get(void)`` and ``void set(int)``),
    else through Python callables (``add_python_library``). ``find`` is called
    once, on the first entry, to add the libraries."""
    cdef int depth, n_c
    cdef _get_threads_fn c_get[_MAX_C_LIBRARIES]
    cdef _set_threads_fn c_set[_MAX_C_LIBRARIES]
    cdef int c_saved[_MAX_C_LIBRARIES]
    cdef list py_libraries, py_saved
    cdef object find, lock

    def __init__(self, find):
        self.find, self.lock = find, threading.Lock()
        self.py_libraries, self.py_saved = [], []

    def add_c_library(self, uintptr_t get, uintptr_t set_):
        if self.n_c == _MAX_C_LIBRARIES:
            raise ValueError("too many BLAS libraries")
        self.c_get[self.n_c] = <_get_threads_fn>get
        self.c_set[self.n_c] = <_set_threads_fn>set_
        self.n_c += 1

    def add_python_library(self, get, set_):
        self.py_libraries.append((get, set_))

    def __call__(self):
        """The limit itself, to enter: ``with single_threaded_blas():``."""
        return self

    def after_fork(self):
        """A new lock in a fork's child (another thread of the parent may have
        held the old one at the fork)."""
        self.lock = threading.Lock()

    def __enter__(self):
        cdef int i, n
        with self.lock:
            if self.find is not None:
                find, self.find = self.find, None
                find(self)
            if self.depth == 0:
                for i in range(self.n_c):
                    n = self.c_saved[i] = self.c_get[i]()
                    if n != 1:
                        self.c_set[i](1)
                self.py_saved = [(set_, get()) for get, set_ in self.py_libraries]
                for set_, saved in self.py_saved:
                    if saved != 1:
                        set_(1)
            self.depth += 1
        return self

    def __exit__(self, *exc):
        cdef int i
        with self.lock:
            self.depth -= 1
            if self.depth == 0:
                for i in range(self.n_c):
                    if self.c_saved[i] != 1:
                        self.c_set[i](self.c_saved[i])
                for set_, saved in self.py_saved:
                    if saved != 1:
                        set_(saved)
                self.py_saved = []
        return False
