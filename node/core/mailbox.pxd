# Native declarations for node/core/mailbox.py (Cython pure mode; see node/core/native.py).
# The .py stays the one source: without a compiled build it runs as plain Python.

cimport cython

@cython.final
cdef class Mailbox:
    cdef public object _claim
    cdef public object global_queue
    cdef public bint in_global
    cdef public Py_ssize_t limit
    cdef public Py_ssize_t overload
    cdef public object queue
    cdef public object service

    cpdef bint push(self, object msg) except -1
    cpdef bint offer(self, object msg) except -1
    cpdef bint push_front(self, object msgs) except -1
    cpdef release(self)
