"""Nyquist from Python: shift-invariant pooling layers on OpenCL, over the C API (ctypes).

``nyquist.run`` mirrors ``nyquist run`` on NumPy arrays::

    import numpy as np, nyquist
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    result = nyquist.run("blur-pool", x, filter_size=5)
    result["output"].shape            # (2, 3, 8, 8)

The library is ``lib/libnyquist.so`` of this repository (``make python`` builds it), or the file
the environment variable ``NYQUIST_LIBRARY`` names. Arrays go through the host: each call uploads
its inputs and reads its results back (a device of Nyquist's own, ``nyquist devices`` lists them).
"""

import ctypes
import os

import numpy as np

__all__ = ["NyquistError", "run", "reference", "version"]


class NyquistError(RuntimeError):
    """A failed call: ``status`` is the C API's status code; the message says what is wrong."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def _library_path():
    configured = os.environ.get("NYQUIST_LIBRARY")
    if configured:
        return configured
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(here, "..", "..", "lib", "libnyquist.so")


_lib = ctypes.CDLL(_library_path())
_strings_type = ctypes.POINTER(ctypes.c_char_p)
_float_p = ctypes.POINTER(ctypes.c_float)
_handle = ctypes.c_void_p
_size = ctypes.c_size_t
_size_p = ctypes.POINTER(ctypes.c_size_t)

_SIGNATURES = {
    "nyquist_device_create_default": [ctypes.c_char_p, ctypes.POINTER(_handle)],
    "nyquist_layer_create": [_handle, ctypes.c_char_p, _size, _strings_type, _strings_type, ctypes.c_char_p, _size, _size_p,
                             ctypes.POINTER(_handle)],
    "nyquist_layer_result_shape": [_handle, ctypes.c_char_p, _size_p, _size_p],
    "nyquist_layer_names": [_handle, ctypes.c_int, ctypes.c_char_p, _size, _size_p],
    "nyquist_operator_options": [ctypes.c_char_p, ctypes.c_char_p, _size, _size_p],
    "nyquist_run_host": [_handle, ctypes.c_int, _size, _strings_type, ctypes.POINTER(_float_p), _size, _strings_type,
                         ctypes.POINTER(_float_p), ctypes.POINTER(_handle)],
    "nyquist_backward_run_host": [_handle, _handle, _size, _strings_type, ctypes.POINTER(_float_p), _size, _strings_type,
                                  ctypes.POINTER(ctypes.c_double), _size, _strings_type, ctypes.POINTER(_float_p)],
    "nyquist_layer_set_parameters_host": [_handle, _size, _strings_type, ctypes.POINTER(_float_p)],
    "nyquist_device_create": [_handle, _handle, _handle, ctypes.POINTER(_handle)],
    "nyquist_run": [_handle, ctypes.c_int, _size, _strings_type, ctypes.POINTER(_handle), _size_p, _size, _strings_type,
                    ctypes.POINTER(_handle), _size_p, ctypes.POINTER(_handle), ctypes.c_uint, ctypes.c_void_p,
                    ctypes.c_void_p],
    "nyquist_backward_run": [_handle, _handle, _size, _strings_type, ctypes.POINTER(_handle), _size_p, _size,
                             _strings_type, ctypes.POINTER(ctypes.c_double), _size, _strings_type,
                             ctypes.POINTER(_handle), _size_p, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p],
    "nyquist_saved_scalar": [_handle, ctypes.c_char_p, ctypes.POINTER(ctypes.c_double)],
    "nyquist_saved_scalar_names": [_handle, ctypes.c_char_p, _size, _size_p],
    "nyquist_reference_forward": [_handle, _float_p, _float_p],
    "nyquist_reference_backward": [_handle, _float_p, _float_p, _float_p],
}
for _name, _arguments in _SIGNATURES.items():
    getattr(_lib, _name).argtypes = _arguments
    getattr(_lib, _name).restype = ctypes.c_int
_lib.nyquist_version.restype = ctypes.c_char_p
_lib.nyquist_last_error.restype = ctypes.c_char_p
_lib.nyquist_layer_release.argtypes = [_handle]
_lib.nyquist_saved_release.argtypes = [_handle]


def _check(status):
    if status != 0:
        raise NyquistError(status, _lib.nyquist_last_error().decode())


def version():
    """The library's version string."""
    return _lib.nyquist_version().decode()


def _names(call, *arguments):
    """A names call of the C API (comma-separated into a buffer) as a list."""
    needed = _size(0)
    _check(call(*arguments, None, 0, ctypes.byref(needed)))
    buffer = ctypes.create_string_buffer(needed.value)
    _check(call(*arguments, buffer, needed.value, None))
    text = buffer.value.decode()
    return text.split(",") if text else []


def _strings(values):
    array = (ctypes.c_char_p * max(len(values), 1))()
    for index, value in enumerate(values):
        array[index] = value.encode()
    return array


def _floats(array):
    return np.ascontiguousarray(array, dtype=np.float32)


def _address(item):
    """The float pointer of a C-contiguous float32 NumPy array, or of an integer address (a
    torch tensor's data_ptr())."""
    if isinstance(item, int):
        return ctypes.cast(ctypes.c_void_p(item), _float_p)
    return item.ctypes.data_as(_float_p)


def _mems(buffers):
    return (_handle * max(len(buffers), 1))(*[memory for memory, _ in buffers])


def _offsets(buffers):
    return (_size * max(len(buffers), 1))(*[offset for _, offset in buffers])


def _pointers(items):
    return (_float_p * max(len(items), 1))(*[_address(item) for item in items])


_devices = {}


def _device(spec):
    """The device handle for `spec`: a name or index of `nyquist devices` (None: the default),
    or a pyopencl CommandQueue (its context, device and queue, wrapped: held, never finished)."""
    key = spec.int_ptr if _is_queue(spec) else spec
    if key not in _devices:
        handle = _handle()
        if _is_queue(spec):
            _check(_lib.nyquist_device_create(spec.context.int_ptr, spec.device.int_ptr, spec.int_ptr,
                                              ctypes.byref(handle)))
        else:
            _check(_lib.nyquist_device_create_default(spec.encode() if spec else None, ctypes.byref(handle)))
        # The queue stays referenced with its handle, so its address is not reused.
        _devices[key] = (handle, spec)
    return _devices[key][0]


def _is_queue(value):
    return type(value).__name__ == "CommandQueue" and type(value).__module__.startswith("pyopencl")


def _is_cl_array(value):
    return type(value).__module__.startswith("pyopencl") and hasattr(value, "base_data")


def _cl_buffer(array):
    """A pyopencl array's memory object and offset in floats (contiguous float32 only)."""
    if array.dtype != np.float32 or not array.flags.c_contiguous:
        raise ValueError("pyopencl arrays must be C-contiguous float32")
    return array.base_data.int_ptr, array.offset // 4


class _Layer:
    """A C layer handle, released with this object. The calls take NumPy arrays or addresses
    (``_address``) of float32 C-contiguous memory of the right shapes, by name."""

    # `which` of nyquist_layer_names.
    INFERENCE_RESULTS, TRAINING_RESULTS, INPUTS, GRADIENTS, PARAMETERS, SCALAR_GROUP = 0, 1, 2, 3, 4, 5
    RESULT_GRADIENTS, SCALAR_GRADIENTS = 6, 7

    def __init__(self, op, shape, params, options, device):
        names = list(options)
        values = [str(options[name]) for name in names]
        dims = (_size * len(shape))(*shape)
        self.handle = _handle()
        _check(_lib.nyquist_layer_create(
            _device(device), op.encode(), len(names), _strings(names), _strings(values),
            os.fspath(params).encode() if params is not None else None, len(shape), dims, ctypes.byref(self.handle)))

    def names(self, which):
        return _names(_lib.nyquist_layer_names, self.handle, which)

    def shape(self, name):
        rank = _size(0)
        dims = (_size * 4)()
        _check(_lib.nyquist_layer_result_shape(self.handle, name.encode(), ctypes.byref(rank), dims))
        return tuple(dims[index] for index in range(rank.value))

    def set_parameters(self, values):
        """Replaces parameters by state_dict name (the others keep theirs)."""
        names = list(values)
        _check(_lib.nyquist_layer_set_parameters_host(
            self.handle, len(names), _strings(names), _pointers([values[n] for n in names])))

    # nyquist_run_flags.
    RUN_TRAINING, RUN_INPUTS_IN_PLACE = 1, 2

    def forward(self, inputs, results, training, inputs_in_place=False):
        """Runs the forward on the named inputs into the named results; a training forward
        returns its saved state (a _Saved), inference None. With `inputs_in_place` the caller
        keeps the input memory valid and unchanged until the saved state is released (a CPU
        device then reads it without a copy)."""
        input_names, result_names = list(inputs), list(results)
        flags = (self.RUN_TRAINING if training else 0) | (self.RUN_INPUTS_IN_PLACE if inputs_in_place else 0)
        saved = _handle()
        _check(_lib.nyquist_run_host(
            self.handle, flags, len(input_names), _strings(input_names),
            _pointers([inputs[n] for n in input_names]), len(result_names), _strings(result_names),
            _pointers([results[n] for n in result_names]), ctypes.byref(saved)))
        return _Saved(saved) if training else None

    def backward(self, saved, result_gradients, scalar_gradients, gradients):
        """Backward from the named result gradients (``output`` required) and scalar gradients
        into the named gradients."""
        given, scalars, wanted = list(result_gradients), list(scalar_gradients), list(gradients)
        scalar_values = (ctypes.c_double * max(len(scalars), 1))(*[float(scalar_gradients[n]) for n in scalars])
        _check(_lib.nyquist_backward_run_host(
            self.handle, saved.handle, len(given), _strings(given), _pointers([result_gradients[n] for n in given]),
            len(scalars), _strings(scalars), scalar_values, len(wanted), _strings(wanted),
            _pointers([gradients[n] for n in wanted])))

    def forward_cl(self, inputs, results, training):
        """forward() on pyopencl arrays: enqueued on the arrays' queue, no host copies."""
        input_names, result_names = list(inputs), list(results)
        input_buffers = [_cl_buffer(inputs[n]) for n in input_names]
        result_buffers = [_cl_buffer(results[n]) for n in result_names]
        saved = _handle()
        _check(_lib.nyquist_run(
            self.handle, 1 if training else 0, len(input_names), _strings(input_names), _mems(input_buffers),
            _offsets(input_buffers), len(result_names), _strings(result_names), _mems(result_buffers),
            _offsets(result_buffers), ctypes.byref(saved), 0, None, None))
        return _Saved(saved) if training else None

    def backward_cl(self, saved, result_gradients, scalar_gradients, gradients):
        """backward() on pyopencl arrays."""
        given, scalars, wanted = list(result_gradients), list(scalar_gradients), list(gradients)
        given_buffers = [_cl_buffer(result_gradients[n]) for n in given]
        wanted_buffers = [_cl_buffer(gradients[n]) for n in wanted]
        scalar_values = (ctypes.c_double * max(len(scalars), 1))(*[float(scalar_gradients[n]) for n in scalars])
        _check(_lib.nyquist_backward_run(
            self.handle, saved.handle, len(given), _strings(given), _mems(given_buffers), _offsets(given_buffers),
            len(scalars), _strings(scalars), scalar_values, len(wanted), _strings(wanted), _mems(wanted_buffers),
            _offsets(wanted_buffers), 0, None, None))

    def __del__(self):
        if getattr(self, "handle", None):
            _lib.nyquist_layer_release(self.handle)


class _Saved:
    """A training forward's saved state, released with this object."""

    def __init__(self, handle):
        self.handle = handle

    def scalars(self):
        values = {}
        for name in _names(_lib.nyquist_saved_scalar_names, self.handle):
            value = ctypes.c_double(0)
            _check(_lib.nyquist_saved_scalar(self.handle, name.encode(), ctypes.byref(value)))
            values[name] = value.value
        return values

    def __del__(self):
        if getattr(self, "handle", None):
            _lib.nyquist_saved_release(self.handle)


def _options(op, options, training, results):
    """Option names of the command line (underscores become dashes); the two that follow the
    command rather than an option, as `nyquist run` sets them: train/eval statistics, and the
    filters among the results."""
    named = {name.replace("_", "-"): value for name, value in options.items()}
    takes = set(_names(_lib.nyquist_operator_options, op.encode()))
    if "statistics" in takes:
        named["statistics"] = "batch" if training else "running"
    if "filters" in takes and results:
        named["filters"] = "true"
    return named


def run(op, x, params=None, grad_output=None, train=False, device=None, inputs=None, grad_extra=None,
        grad_scalars=None, **options):
    """Runs operator ``op`` (a ``nyquist run`` name) on the float32 array ``x``, as ``nyquist run``.

    ``params`` is a safetensors file of the layer's state_dict, or a dict of arrays by
    state_dict name (None: the default initialisation, seeded by the ``seed`` option where there
    is one); ``options`` are the operator's options with underscores for dashes
    (``filter_size=5``); ``inputs`` holds further named inputs (lift-up-pool's ``lh``, ``hl``,
    ``hh``; aps-pool's ``indices``); ``device`` names an OpenCL device (None: the default). With
    ``grad_output`` (or ``train``) the layer trains: batch statistics, losses, and with
    ``grad_output`` the backward, which also takes the gradients of other results
    (``grad_extra``: lift-down-pool's bands, tips-pool's psi and tau) and of scalar results
    (``grad_scalars``: their weights, lift-down-pool's ``loss``, tips-pool's ``fm`` and ``undo``).

    ``x`` may be a pyopencl array (float32, C-contiguous): then every input and gradient given
    must be one on the same queue, the layer runs on that queue (wrapped as the C API's
    nyquist_device_create does) and the results are new pyopencl arrays: no host copies.

    Returns a dict: ``output``; ``extra``, the other results by name (bands, indices, psi, tau,
    filters, statistics) and, for a training run, the scalar results under their group's name
    (``losses``, ``regularisers``); with ``grad_output`` also ``grad_input``, ``grad_extra`` (the
    other inputs' gradients) and ``grad_params`` (by state_dict name).
    """
    on_device = _is_cl_array(x)
    if on_device:
        import pyopencl.array as cl_array

        queue = x.queue
        device = queue

        def convert(value):
            return value

        def empty(shape):
            return cl_array.empty(queue, shape, np.float32)
    else:
        convert, empty = _floats, (lambda shape: np.empty(shape, dtype=np.float32))
    x = convert(x)
    training = bool(train) or grad_output is not None
    path = None if isinstance(params, dict) else params
    layer = _Layer(op, x.shape, path, _options(op, options, training, True), device)
    if isinstance(params, dict):
        layer.set_parameters({name: _floats(value) for name, value in params.items()})
    named_inputs = {"input": x}
    named_inputs.update({name: convert(value) for name, value in (inputs or {}).items()})
    # Every result comes from the training forward, as `nyquist run --extra`; with eval-mode
    # statistics (see _options) its output is the inference output.
    results = {name: empty(layer.shape(name)) for name in layer.names(_Layer.TRAINING_RESULTS)}
    forward = layer.forward_cl if on_device else layer.forward
    saved = forward(named_inputs, results, training=True)
    answer = {"output": results.pop("output"), "extra": results}
    group = layer.names(_Layer.SCALAR_GROUP)
    if training and group:
        answer["extra"][group[0]] = saved.scalars()
    if grad_output is not None:
        given = {"output": convert(grad_output)}
        given.update({name: convert(value) for name, value in (grad_extra or {}).items()})
        wanted = layer.names(_Layer.GRADIENTS)
        gradients = {name: empty(layer.shape(name)) for name in wanted}
        backward = layer.backward_cl if on_device else layer.backward
        backward(saved, given, grad_scalars or {}, gradients)
        answer["grad_input"] = gradients.pop("input")
        others = [name for name in named_inputs if name != "input" and name in gradients]
        answer["grad_extra"] = {name: gradients.pop(name) for name in others}
        answer["grad_params"] = gradients
    return answer


def reference(op, x, params=None, grad_output=None, device=None, **options):
    """The same operator on the library's CPU reference (for checking): ``output`` and, with
    ``grad_output``, ``grad_input``."""
    x = _floats(x)
    layer = _Layer(op, x.shape, params, _options(op, options, grad_output is not None, False), device)
    output = np.empty(layer.shape("output"), dtype=np.float32)
    _check(_lib.nyquist_reference_forward(layer.handle, x.ctypes.data_as(_float_p), output.ctypes.data_as(_float_p)))
    answer = {"output": output}
    if grad_output is not None:
        grad_input = np.empty(x.shape, dtype=np.float32)
        _check(_lib.nyquist_reference_backward(
            layer.handle, x.ctypes.data_as(_float_p), _floats(grad_output).ctypes.data_as(_float_p),
            grad_input.ctypes.data_as(_float_p)))
        answer["grad_input"] = grad_input
    return answer
