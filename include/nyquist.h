/*
 * nyquist.h: the C API of Nyquist, shift-invariant pooling layers as OpenCL kernels.
 *
 * Layers run on the caller's OpenCL objects: a context, an in-order command queue of it, and
 * cl_mem buffers holding float32 NCHW tensors (N, C, L for 1-D LiftPool). Every call enqueues
 * on the caller's queue after the given wait list and returns without waiting; the optional
 * `event` out-parameter receives the completion event of the call (the caller releases it with
 * clReleaseEvent). Handles are opaque; every function returns a status, and on failure
 * nyquist_last_error() gives a one-line message for the calling thread.
 *
 * Link with -lNyquistC (lib/libnyquist.so after `make lib`) and -lOpenCL.
 */
#ifndef NYQUIST_H
#define NYQUIST_H

#include <stddef.h>
/* Nyquist uses the OpenCL 1.2 API; a caller that needs a later one defines this first. */
#ifndef CL_TARGET_OPENCL_VERSION
#define CL_TARGET_OPENCL_VERSION 120
#endif
#include <CL/cl.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Status of a call: NYQUIST_SUCCESS, or what kind of failure (see nyquist_last_error()). */
typedef enum nyquist_status {
    NYQUIST_SUCCESS = 0,
    NYQUIST_INVALID_ARGUMENT = 1,   /* a null pointer, an unknown operator or option, a bad value */
    NYQUIST_INVALID_SHAPE = 2,      /* a shape the operator refuses, or buffers too small for it */
    NYQUIST_INVALID_PARAMETERS = 3, /* missing, misshapen or unexpected parameters */
    NYQUIST_INVALID_FILE = 4,       /* a malformed parameter file */
    NYQUIST_IO_ERROR = 5,           /* a file that cannot be read */
    NYQUIST_SIZE_LIMIT = 6,         /* a tensor over the limits */
    NYQUIST_UNSUPPORTED = 7,        /* an operation the operator or device does not support */
    NYQUIST_OUT_OF_MEMORY = 8,      /* the device is out of memory */
    NYQUIST_DEVICE_ERROR = 9        /* any other OpenCL failure */
} nyquist_status;

/** A device: the caller's context and queue, held (one reference each) until released. */
typedef struct nyquist_device nyquist_device;
/** A layer: one operator with its options and parameters, for inputs of one shape. */
typedef struct nyquist_layer nyquist_layer;
/** What a training forward keeps for its backward. */
typedef struct nyquist_saved nyquist_saved;

/** The library's version ("MAJOR.MINOR.PATCH"), static storage. */
const char *nyquist_version(void);

/** The message of the calling thread's last failed call ("" if none); valid until its next call. */
const char *nyquist_last_error(void);

/**
 * Wraps the caller's `context`, `device` and in-order `queue` (an out-of-order queue is refused:
 * memory is reused in queue order). The queue is never finished implicitly.
 */
nyquist_status nyquist_device_create(cl_context context, cl_device_id device, cl_command_queue queue,
                                     nyquist_device **out);
/**
 * A device with Nyquist's own context and queue, on the device `spec` names (an index or a name
 * substring as `nyquist devices` lists them; NULL: NYQUIST_DEVICE, else the first GPU, else any).
 * For the host-array calls (nyquist_run_host), which need no OpenCL objects of the caller's.
 */
nyquist_status nyquist_device_create_default(const char *spec, nyquist_device **out);

/** Releases a device (and its references to the caller's context and queue); NULL is ignored. */
void nyquist_device_release(nyquist_device *device);

/**
 * Creates the layer of operator `op` ("blur-pool", "lift-down-pool", ...: the names of
 * `nyquist run`) for inputs of `input_shape` (`rank` 4, or 3 for 1-D LiftPool), with
 * `option_count` options given as names and values as on the command line without dashes
 * ("filter-size" = "5"). `parameters_path` is a safetensors file of a PyTorch state_dict (NULL:
 * the operator's default initialisation, seeded by the "seed" option where it has one).
 */
nyquist_status nyquist_layer_create(nyquist_device *device, const char *op, size_t option_count,
                                    const char *const *option_names, const char *const *option_values,
                                    const char *parameters_path, size_t rank, const size_t *input_shape,
                                    nyquist_layer **out);
/** Releases a layer; NULL is ignored. */
void nyquist_layer_release(nyquist_layer *layer);

/** The output's rank and shape (`shape` holds at least 4 values). */
nyquist_status nyquist_layer_output_shape(const nyquist_layer *layer, size_t *rank, size_t *shape);

/**
 * Inference forward of the float32 tensor in `input` (starting `input_offset` floats in) into
 * `output` (at `output_offset`; a non-zero offset must be a multiple of the device's
 * CL_DEVICE_MEM_BASE_ADDR_ALIGN in floats). The first kernel waits for `wait_list`; `event`
 * (may be NULL) receives the completion event.
 */
nyquist_status nyquist_forward(nyquist_layer *layer, cl_mem input, size_t input_offset, cl_mem output,
                               size_t output_offset, cl_uint wait_count, const cl_event *wait_list, cl_event *event);

/** Training forward: as nyquist_forward, and `saved` receives what nyquist_backward needs. */
nyquist_status nyquist_forward_training(nyquist_layer *layer, cl_mem input, size_t input_offset, cl_mem output,
                                        size_t output_offset, nyquist_saved **saved, cl_uint wait_count,
                                        const cl_event *wait_list, cl_event *event);

/**
 * Backward from the gradient of the output (`grad_output`; the other results' are zero) into the gradient of the input
 * (`grad_input`), using a training forward's `saved` state of this layer. Loss terms count as
 * the options say: tips-pool's lambda-fm and lambda-undo (default 0), lift-down-pool's
 * regularisers with weight 1.
 */
nyquist_status nyquist_backward(nyquist_layer *layer, const nyquist_saved *saved, cl_mem grad_output,
                                size_t grad_output_offset, cl_mem grad_input, size_t grad_input_offset,
                                cl_uint wait_count, const cl_event *wait_list, cl_event *event);
/** Releases a saved state; NULL is ignored. */
void nyquist_saved_release(nyquist_saved *saved);

/**
 * The shape of a named tensor of the layer: a result ("output", or one of nyquist_layer_names's
 * results: "indices" of aps-pool; "psi", "tau" of tips-pool; the bands "ll", "lh", "hl", "hh"
 * (1-D: "s", "d") of lift-down-pool; "filters" and the statistics of adaptive-blur-pool), an
 * input ("input", "lh", ...), or a parameter by state_dict name (its gradient has its shape).
 */
nyquist_status nyquist_layer_result_shape(const nyquist_layer *layer, const char *name, size_t *rank, size_t *shape);

/**
 * The layer's names, comma-separated into `buffer` (NUL-terminated; `needed` receives the bytes
 * needed with the NUL; a NULL buffer only asks): `which` 0 the results of an inference call,
 * 1 those of a training forward, 2 its inputs, 3 the gradients its backward gives ("input", the
 * other inputs', the trainable parameters'), 4 its parameters, 5 the name of its scalar results'
 * group as `nyquist run --extra` names their file ("losses", "regularisers"; empty without),
 * 6 the results whose gradients backward takes ("output", then lift-down-pool's bands,
 * tips-pool's "psi" and "tau"), 7 the scalar results whose gradients backward takes.
 */
nyquist_status nyquist_layer_names(const nyquist_layer *layer, int which, char *buffer, size_t capacity, size_t *needed);

/**
 * A forward with named inputs and results: inputs "input" and, where the operator takes them,
 * lift-up-pool's detail bands "lh", "hl", "hh" (1-D: "d"; shaped like "input") and aps-pool's
 * "indices" (N floats in 0...3, phases to sample); results by the names of
 * nyquist_layer_result_shape, each copied into the caller's buffer of that name. With
 * `training` non-zero it is the training forward and `saved` receives its state (and its scalar
 * results, see nyquist_saved_scalar). Inference computes fewer results (tips-pool: no psi).
 */
nyquist_status nyquist_run(nyquist_layer *layer, int training, size_t input_count, const char *const *input_names,
                           const cl_mem *inputs, const size_t *input_offsets, size_t output_count,
                           const char *const *output_names, const cl_mem *outputs, const size_t *output_offsets,
                           nyquist_saved **saved, cl_uint wait_count, const cl_event *wait_list, cl_event *event);

/** The option names operator `op` takes, comma-separated (as nyquist_layer_names writes names). */
nyquist_status nyquist_operator_options(const char *op, char *buffer, size_t capacity, size_t *needed);

/** The names of a training forward's scalar results, comma-separated (as nyquist_layer_names). */
nyquist_status nyquist_saved_scalar_names(const nyquist_saved *saved, char *buffer, size_t capacity, size_t *needed);

/**
 * A scalar result of a training forward: "fm", "undo" (tips-pool), "c_u", "c_p", "loss"
 * (lift-down-pool). The first call for a saved state reads them from the device, waiting for the
 * forward (which itself did not wait).
 */
nyquist_status nyquist_saved_scalar(const nyquist_saved *saved, const char *name, double *value);

/**
 * A backward from named gradients of the results: "output" (required: give zeros when the
 * output is unused) and, where the operator takes them (nyquist_layer_names 6), its other
 * results': lift-down-pool's bands "ll", "lh", "hl", "hh" (1-D: "s", "d"), tips-pool's "psi" and
 * "tau"; a result left out has gradient zero. `scalar_gradients` are the gradients of scalar
 * results (nyquist_layer_names 7: their weights in the objective): lift-down-pool's "loss"
 * (default 1), tips-pool's "fm" and "undo" (default: the options lambda-fm and lambda-undo).
 * Writes named gradients: "input", the other inputs' ("lh", "hl", "hh", "d") and the
 * parameters' by PyTorch state_dict name ("conv.weight", "predict.0.weight", ...), each into the
 * caller's buffer of that name (of that tensor's shape).
 */
nyquist_status nyquist_backward_run(nyquist_layer *layer, const nyquist_saved *saved, size_t gradient_count,
                                    const char *const *gradient_names, const cl_mem *gradients,
                                    const size_t *gradient_offsets, size_t scalar_count, const char *const *scalar_names,
                                    const double *scalar_gradients, size_t output_count, const char *const *output_names,
                                    const cl_mem *outputs, const size_t *output_offsets, cl_uint wait_count,
                                    const cl_event *wait_list, cl_event *event);

/**
 * Replaces parameters by PyTorch state_dict name with the contents of the caller's buffers
 * (each of the parameter's shape, at its offset in floats), read once `wait_list` has
 * completed; parameters left out keep their values (adaptive-blur-pool's running statistics
 * are parameters too: a training forward updates them). Blocking: it waits for the wait list
 * and reads the buffers.
 */
nyquist_status nyquist_layer_set_parameters(nyquist_layer *layer, size_t count, const char *const *names,
                                            const cl_mem *buffers, const size_t *offsets, cl_uint wait_count,
                                            const cl_event *wait_list);

/** nyquist_layer_set_parameters from host float arrays. */
nyquist_status nyquist_layer_set_parameters_host(nyquist_layer *layer, size_t count, const char *const *names,
                                                 const float *const *values);

/** Flags of nyquist_run_host. */
enum nyquist_run_flags {
    NYQUIST_RUN_TRAINING = 1,       /* the training forward (else inference) */
    NYQUIST_RUN_INPUTS_IN_PLACE = 2 /* training: the caller keeps the inputs valid and unchanged until
                                       nyquist_saved_release, so a CPU device may read them in place */
};

/**
 * nyquist_run on host float arrays: the layer runs on the device and the requested results are
 * read back into `outputs` (each of its result's shape). Blocking. `flags` is a combination of
 * nyquist_run_flags (0: inference). On a device whose memory is the host's (a CPU device) the
 * kernels read the inputs in place during an inference call, and during a training forward with
 * NYQUIST_RUN_INPUTS_IN_PLACE; otherwise the inputs are copied to the device first.
 */
nyquist_status nyquist_run_host(nyquist_layer *layer, int flags, size_t input_count, const char *const *input_names,
                                const float *const *inputs, size_t output_count, const char *const *output_names,
                                float *const *outputs, nyquist_saved **saved);

/** nyquist_backward_run on host float arrays (a CPU device reads the gradients in place). Blocking. */
nyquist_status nyquist_backward_run_host(nyquist_layer *layer, const nyquist_saved *saved, size_t gradient_count,
                                         const char *const *gradient_names, const float *const *gradients,
                                         size_t scalar_count, const char *const *scalar_names,
                                         const double *scalar_gradients, size_t output_count,
                                         const char *const *output_names, float *const *outputs);

/**
 * The same layer on the CPU reference (double precision inside), on host arrays: `input` of the
 * input shape, `output` of the output shape. For checking results; blocking.
 */
nyquist_status nyquist_reference_forward(const nyquist_layer *layer, const float *input, float *output);
/** The CPU reference's input gradient for `grad_output` at `input` (training forward, then backward). */
nyquist_status nyquist_reference_backward(const nyquist_layer *layer, const float *input, const float *grad_output,
                                          float *grad_input);

#ifdef __cplusplus
}
#endif

#endif /* NYQUIST_H */
