# Native declarations for node/core/runner.py (Cython pure mode; see node/core/native.py).
# The .py stays the one source: without a compiled build it runs as plain Python.
# Methods left out here stay ordinary Python-visible methods; the cdef ones below
# are internal to the dispatch path and never called from Python. Core is final in
# effect (nothing subclasses it): the service is a separate, plain Python object.

cimport cython
from node.core.mailbox cimport Mailbox

@cython.final
cdef class Task:
    cdef public object coro
    cdef public object source
    cdef public object session
    cdef public int kind
    cdef public object method

@cython.final
cdef class Core:
    cdef public object service
    cdef public object handle
    cdef public object _hook
    cdef public dict _handlers
    cdef public object _host
    cdef public Mailbox _mailbox
    cdef public dict _services
    cdef public int _state
    cdef public Py_ssize_t _session
    cdef public dict _suspended
    cdef public dict _timers
    cdef public dict _callbacks  # None until the first timeout()
    cdef public list _forks  # None until the first fork()
    cdef public list _deferred  # None unless held during on_start
    cdef public object _current
    cdef public Py_ssize_t _n_msgs
    cdef public Py_ssize_t _n_calls
    cdef public Py_ssize_t _n_errors
    cdef public double _cpu
    cdef public object _exit_reason
    cdef public object _crit
    cdef public object _msg
    cdef public object _sinks
    cdef public object _tokens
    cdef public object _responders

    @cython.locals(svc=object, mb=Mailbox)
    cpdef bint _send_local(self, object dest, object method, tuple args) except -1
    @cython.locals(svc=object, mb=Mailbox, s=Py_ssize_t)
    cpdef Py_ssize_t _call_local(self, object dest, object method, tuple args, double timeout) except -1
    @cython.locals(kind=int, is_async=bint)
    cpdef _dispatch(self, object msg)
    cdef _resume(self, object session, int kind, object payload)
    cdef _step(self, Task task, object value, object exc)
    cdef _finished(self, Task task, object value)
    cdef _task_failed(self, Task task, object err)
    cdef _failed(self, object source, object session, object method, object err)
    cdef _no_handler(self, object source, object session, object method)
    cdef _not_running(self, object msg)
    cdef _run_forks(self)

@cython.locals(svc=Core, q=object, n=Py_ssize_t, hook=object)
cpdef run_turns(object sched, Mailbox mb, object w, int weight)
