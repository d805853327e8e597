/*
 * Nyquist from C: the application owns the OpenCL context, queue and buffers; Nyquist runs
 * blur-pool and lift-down-pool forward and backward on them through include/nyquist.h and the
 * results are checked against the library's CPU reference; LiftPool's bands, regulariser loss
 * and named gradients go through nyquist_run and nyquist_backward_run, and lift-up-pool
 * reconstructs the input from the bands. Built and run by `make test`.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nyquist.h"

#define CHECK(call)                                                                       \
    do {                                                                                  \
        nyquist_status status_ = (call);                                                  \
        if (status_ != NYQUIST_SUCCESS) {                                                 \
            fprintf(stderr, "%s failed (%d): %s\n", #call, (int)status_, nyquist_last_error()); \
            exit(1);                                                                      \
        }                                                                                 \
    } while (0)

static size_t count_of(size_t rank, const size_t *shape) {
    size_t count = 1;
    for (size_t i = 0; i < rank; i++) count *= shape[i];
    return count;
}

static cl_mem buffer(cl_context context, size_t floats) {
    cl_int status;
    cl_mem memory = clCreateBuffer(context, CL_MEM_READ_WRITE, floats * sizeof(float), NULL, &status);
    if (status != CL_SUCCESS) { fprintf(stderr, "clCreateBuffer: %d\n", status); exit(1); }
    return memory;
}

/* max |a - b| / max(max |b|, floor). */
static double relative_error(const float *a, const float *b, size_t count, double floor) {
    double largest = 0, magnitude = floor;
    for (size_t i = 0; i < count; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > largest) largest = d;
        if (fabs((double)b[i]) > magnitude) magnitude = fabs((double)b[i]);
    }
    return largest / magnitude;
}

/* Forward and backward of `op` on the caller's buffers, checked against the reference. */
static int run(nyquist_device *device, cl_context context, cl_command_queue queue, const char *op, size_t option_count,
               const char *const *names, const char *const *values, double tolerance) {
    const size_t input_shape[4] = {2, 3, 9, 10};
    nyquist_layer *layer = NULL;
    CHECK(nyquist_layer_create(device, op, option_count, names, values, NULL, 4, input_shape, &layer));
    size_t rank = 0, output_shape[4] = {0};
    CHECK(nyquist_layer_output_shape(layer, &rank, output_shape));
    size_t input_count = count_of(4, input_shape), output_count = count_of(rank, output_shape);

    float *x = malloc(input_count * sizeof(float)), *gy = malloc(output_count * sizeof(float));
    float *y = malloc(output_count * sizeof(float)), *gx = malloc(input_count * sizeof(float));
    float *y_ref = malloc(output_count * sizeof(float)), *gx_ref = malloc(input_count * sizeof(float));
    unsigned state = 12345;
    for (size_t i = 0; i < input_count; i++) { state = state * 1103515245u + 12345u; x[i] = (float)((state >> 8) % 2001) / 1000.0f - 1.0f; }
    for (size_t i = 0; i < output_count; i++) { state = state * 1103515245u + 12345u; gy[i] = (float)((state >> 8) % 2001) / 1000.0f - 1.0f; }

    cl_mem x_mem = buffer(context, input_count), y_mem = buffer(context, output_count);
    cl_mem gy_mem = buffer(context, output_count), gx_mem = buffer(context, input_count);
    clEnqueueWriteBuffer(queue, x_mem, CL_TRUE, 0, input_count * sizeof(float), x, 0, NULL, NULL);
    clEnqueueWriteBuffer(queue, gy_mem, CL_TRUE, 0, output_count * sizeof(float), gy, 0, NULL, NULL);

    /* Inference forward, waited for through its event. */
    cl_event done = NULL;
    CHECK(nyquist_forward(layer, x_mem, 0, y_mem, 0, 0, NULL, &done));
    clWaitForEvents(1, &done);
    clReleaseEvent(done);
    clEnqueueReadBuffer(queue, y_mem, CL_TRUE, 0, output_count * sizeof(float), y, 0, NULL, NULL);
    CHECK(nyquist_reference_forward(layer, x, y_ref));
    double forward_error = relative_error(y, y_ref, output_count, 1.0);

    /* Training forward, then backward after it (in queue order; the event is not needed). */
    nyquist_saved *saved = NULL;
    CHECK(nyquist_forward_training(layer, x_mem, 0, y_mem, 0, &saved, 0, NULL, NULL));
    CHECK(nyquist_backward(layer, saved, gy_mem, 0, gx_mem, 0, 0, NULL, NULL));
    clEnqueueReadBuffer(queue, gx_mem, CL_TRUE, 0, input_count * sizeof(float), gx, 0, NULL, NULL);
    CHECK(nyquist_reference_backward(layer, x, gy, gx_ref));
    double backward_error = relative_error(gx, gx_ref, input_count, 1.0);

    printf("%s: output %zux%zux%zux%zu, forward error %.2e, backward error %.2e\n", op, output_shape[0], output_shape[1],
           output_shape[2], output_shape[3], forward_error, backward_error);
    int failed = !(forward_error <= tolerance && backward_error <= tolerance);
    nyquist_saved_release(saved);
    nyquist_layer_release(layer);
    clReleaseMemObject(x_mem); clReleaseMemObject(y_mem); clReleaseMemObject(gy_mem); clReleaseMemObject(gx_mem);
    free(x); free(gy); free(y); free(gx); free(y_ref); free(gx_ref);
    return failed;
}

/*
 * LiftPool through named inputs and results: lift-down-pool's training forward writes the
 * pooled output and the four bands (and gives its regulariser loss), lift-up-pool reconstructs
 * the input from the bands; backward writes the input's and a parameter's gradients by name.
 */
static int lift_round_trip(nyquist_device *device, cl_context context, cl_command_queue queue) {
    const size_t input_shape[4] = {2, 3, 7, 10};
    size_t input_count = count_of(4, input_shape);
    nyquist_layer *down = NULL;
    CHECK(nyquist_layer_create(device, "lift-down-pool", 0, NULL, NULL, NULL, 4, input_shape, &down));
    size_t rank = 0, band_shape[4] = {0};
    CHECK(nyquist_layer_result_shape(down, "ll", &rank, band_shape));
    size_t band_count = count_of(rank, band_shape);

    float *x = malloc(input_count * sizeof(float)), *back = malloc(input_count * sizeof(float));
    for (size_t i = 0; i < input_count; i++) x[i] = (float)sin(0.37 * (double)i);
    cl_mem x_mem = buffer(context, input_count), back_mem = buffer(context, input_count);
    cl_mem y_mem = buffer(context, band_count), band_mem[4];
    for (int b = 0; b < 4; b++) band_mem[b] = buffer(context, band_count);
    clEnqueueWriteBuffer(queue, x_mem, CL_TRUE, 0, input_count * sizeof(float), x, 0, NULL, NULL);

    const char *input_name[] = {"input"};
    const char *down_names[] = {"output", "ll", "lh", "hl", "hh"};
    cl_mem down_outputs[] = {y_mem, band_mem[0], band_mem[1], band_mem[2], band_mem[3]};
    nyquist_saved *saved = NULL;
    CHECK(nyquist_run(down, 1, 1, input_name, &x_mem, NULL, 5, down_names, down_outputs, NULL, &saved, 0, NULL, NULL));
    double loss = 0;
    CHECK(nyquist_saved_scalar(saved, "loss", &loss));

    /* lift-up-pool on bands of band_shape, back to the input's size. */
    char height[16], width[16];
    snprintf(height, sizeof height, "%zu", input_shape[2]);
    snprintf(width, sizeof width, "%zu", input_shape[3]);
    const char *up_option_names[] = {"height", "width"}, *up_option_values[] = {height, width};
    nyquist_layer *up = NULL;
    CHECK(nyquist_layer_create(device, "lift-up-pool", 2, up_option_names, up_option_values, NULL, 4, band_shape, &up));
    const char *up_inputs[] = {"input", "lh", "hl", "hh"};
    const char *output_name[] = {"output"};
    CHECK(nyquist_run(up, 0, 4, up_inputs, band_mem, NULL, 1, output_name, &back_mem, NULL, NULL, 0, NULL, NULL));
    clEnqueueReadBuffer(queue, back_mem, CL_TRUE, 0, input_count * sizeof(float), back, 0, NULL, NULL);
    double reconstruction = relative_error(back, x, input_count, 1.0);

    /* Named gradients: the input's and one parameter's (predict.0.weight, C x 1 x K). */
    float *gy = malloc(band_count * sizeof(float)), *gx = malloc(input_count * sizeof(float));
    float *gx_ref = malloc(input_count * sizeof(float)), weight_grad[3 * 5];
    for (size_t i = 0; i < band_count; i++) gy[i] = (float)cos(0.11 * (double)i);
    cl_mem gy_mem = buffer(context, band_count), gx_mem = buffer(context, input_count), gw_mem = buffer(context, 3 * 5);
    clEnqueueWriteBuffer(queue, gy_mem, CL_TRUE, 0, band_count * sizeof(float), gy, 0, NULL, NULL);
    const char *gradient_names[] = {"input", "predict.0.weight"};
    cl_mem gradient_outputs[] = {gx_mem, gw_mem};
    const char *result_gradient_names[] = {"output"};
    cl_mem result_gradients[] = {gy_mem};
    CHECK(nyquist_backward_run(down, saved, 1, result_gradient_names, result_gradients, NULL, 0, NULL, NULL, 2,
                               gradient_names, gradient_outputs, NULL, 0, NULL, NULL));
    clEnqueueReadBuffer(queue, gx_mem, CL_TRUE, 0, input_count * sizeof(float), gx, 0, NULL, NULL);
    clEnqueueReadBuffer(queue, gw_mem, CL_TRUE, 0, sizeof weight_grad, weight_grad, 0, NULL, NULL);
    CHECK(nyquist_reference_backward(down, x, gy, gx_ref));
    double gradient_error = relative_error(gx, gx_ref, input_count, 1.0);
    double weight_norm = 0;
    for (int i = 0; i < 3 * 5; i++) weight_norm += fabs((double)weight_grad[i]);

    printf("lift round trip: bands %zux%zux%zux%zu, regulariser loss %.4f, reconstruction error %.2e, "
           "gradient error %.2e, |d predict.0.weight| %.3f\n",
           band_shape[0], band_shape[1], band_shape[2], band_shape[3], loss, reconstruction, gradient_error, weight_norm);
    /* Tolerances: reconstruction 1e-5 as the CLI's round trip; LiftPool backward 1e-4 (docs/parity.md). */
    int failed = !(reconstruction <= 1e-5 && gradient_error <= 1e-4 && loss > 0 && isfinite(loss) && weight_norm > 0);

    nyquist_saved_release(saved);
    nyquist_layer_release(up);
    nyquist_layer_release(down);
    clReleaseMemObject(x_mem); clReleaseMemObject(back_mem); clReleaseMemObject(y_mem);
    for (int b = 0; b < 4; b++) clReleaseMemObject(band_mem[b]);
    clReleaseMemObject(gy_mem); clReleaseMemObject(gx_mem); clReleaseMemObject(gw_mem);
    free(x); free(back); free(gy); free(gx); free(gx_ref);
    return failed;
}

/*
 * Host arrays on a device of Nyquist's own (no OpenCL objects of the caller's): tips-pool's
 * training forward with psi, tau and the losses, then named gradients, against the reference.
 */
static int host_calls(void) {
    nyquist_device *device = NULL;
    CHECK(nyquist_device_create_default(NULL, &device));
    const size_t shape[4] = {2, 3, 9, 10};
    const char *names[] = {"lambda-fm", "lambda-undo"}, *values[] = {"0.5", "0.25"};
    nyquist_layer *layer = NULL;
    CHECK(nyquist_layer_create(device, "tips-pool", 2, names, values, NULL, 4, shape, &layer));
    size_t rank = 0, output_shape[4] = {0}, psi_shape[4] = {0};
    CHECK(nyquist_layer_result_shape(layer, "output", &rank, output_shape));
    CHECK(nyquist_layer_result_shape(layer, "psi", &rank, psi_shape));
    size_t input_count = count_of(4, shape), output_count = count_of(4, output_shape), psi_count = count_of(4, psi_shape);
    float *x = malloc(input_count * sizeof(float)), *y = malloc(output_count * sizeof(float));
    float *psi = malloc(psi_count * sizeof(float)), tau[2 * 3 * 4], *y_ref = malloc(output_count * sizeof(float));
    float *gy = malloc(output_count * sizeof(float)), *gx = malloc(input_count * sizeof(float));
    float *gx_ref = malloc(input_count * sizeof(float)), conv1[3 * 1 * 3 * 3];
    for (size_t i = 0; i < input_count; i++) x[i] = (float)sin(0.23 * (double)i);
    for (size_t i = 0; i < output_count; i++) gy[i] = (float)cos(0.17 * (double)i);

    /* What each pass produces, by name: inference writes no psi. */
    char inference_names[64], training_names[64], gradient_names_text[64];
    CHECK(nyquist_layer_names(layer, 0, inference_names, sizeof inference_names, NULL));
    CHECK(nyquist_layer_names(layer, 1, training_names, sizeof training_names, NULL));
    CHECK(nyquist_layer_names(layer, 3, gradient_names_text, sizeof gradient_names_text, NULL));
    size_t conv1_rank = 0, conv1_shape[4] = {0};
    CHECK(nyquist_layer_result_shape(layer, "conv1.weight", &conv1_rank, conv1_shape));
    printf("tips-pool results: inference %s; training %s; gradients %s; conv1.weight %zux%zux%zux%zu\n",
           inference_names, training_names, gradient_names_text, conv1_shape[0], conv1_shape[1], conv1_shape[2],
           conv1_shape[3]);
    int names_wrong = strcmp(inference_names, "output,tau") != 0 || strcmp(training_names, "output,psi,tau") != 0 ||
                      strcmp(gradient_names_text, "input,conv1.weight,conv2.weight") != 0 || conv1_rank != 4 ||
                      conv1_shape[0] != 3 || conv1_shape[2] != 3;

    /* New weights from host arrays (as a training loop sets them each step): the device layer
     * and the reference both use them from here on. */
    float new_conv1[3 * 1 * 3 * 3];
    for (int i = 0; i < 27; i++) new_conv1[i] = 0.05f * (float)(i % 7) - 0.1f;
    const char *parameter_names[] = {"conv1.weight"};
    const float *parameter_values[] = {new_conv1};
    CHECK(nyquist_layer_set_parameters_host(layer, 1, parameter_names, parameter_values));

    const char *input_name[] = {"input"};
    const float *inputs[] = {x};
    const char *result_names[] = {"output", "psi", "tau"};
    float *results[] = {y, psi, tau};
    nyquist_saved *saved = NULL;
    CHECK(nyquist_run_host(layer, 1, 1, input_name, inputs, 3, result_names, results, &saved));
    double fm = 0, undo = 0;
    CHECK(nyquist_saved_scalar(saved, "fm", &fm));
    CHECK(nyquist_saved_scalar(saved, "undo", &undo));
    CHECK(nyquist_reference_forward(layer, x, y_ref));
    double forward_error = relative_error(y, y_ref, output_count, 1.0);

    const char *gradient_names[] = {"input", "conv1.weight"};
    float *gradients[] = {gx, conv1};
    const char *output_name[] = {"output"};
    const float *output_gradients[] = {gy};
    CHECK(nyquist_backward_run_host(layer, saved, 1, output_name, output_gradients, 0, NULL, NULL, 2, gradient_names,
                                    gradients));
    CHECK(nyquist_reference_backward(layer, x, gy, gx_ref));
    double backward_error = relative_error(gx, gx_ref, input_count, 1.0);
    double tau_sum = 0;
    for (int i = 0; i < 4; i++) tau_sum += tau[i];

    printf("tips-pool on host arrays: forward error %.2e, backward error %.2e, L_FM %.4f, L_undo %.4f, "
           "tau sums to %.6f\n", forward_error, backward_error, fm, undo, tau_sum);
    /* Tolerances: TIPS forward 1e-5, backward 1e-4 (docs/parity.md); tau is a softmax. */
    int failed = names_wrong || !(forward_error <= 1e-5 && backward_error <= 1e-4 && fabs(tau_sum - 1) <= 1e-5 &&
                                  isfinite(fm) && isfinite(undo));
    nyquist_saved_release(saved);
    nyquist_layer_release(layer);
    nyquist_device_release(device);
    free(x); free(y); free(psi); free(y_ref); free(gy); free(gx); free(gx_ref);
    return failed;
}

int main(void) {
    cl_platform_id platform;
    cl_device_id device_id;
    cl_uint found = 0;
    if (clGetPlatformIDs(1, &platform, &found) != CL_SUCCESS || found == 0 ||
        clGetDeviceIDs(platform, CL_DEVICE_TYPE_ALL, 1, &device_id, &found) != CL_SUCCESS || found == 0) {
        fprintf(stderr, "no OpenCL device\n");
        return 1;
    }
    cl_int status;
    cl_context context = clCreateContext(NULL, 1, &device_id, NULL, NULL, &status);
    cl_command_queue queue = clCreateCommandQueue(context, device_id, 0, &status);
    printf("nyquist %s\n", nyquist_version());

    nyquist_device *device = NULL;
    CHECK(nyquist_device_create(context, device_id, queue, &device));
    const char *blur_names[] = {"filter-size"}, *blur_values[] = {"5"};
    /* Tolerances: the parity suite's (docs/parity.md): blur 1e-5, LiftPool backward 1e-4. */
    int failed = run(device, context, queue, "blur-pool", 1, blur_names, blur_values, 1e-5);
    failed |= run(device, context, queue, "lift-down-pool", 0, NULL, NULL, 1e-4);
    failed |= lift_round_trip(device, context, queue);
    failed |= host_calls();

    /* A mistake is a status and a message, not a crash. */
    nyquist_layer *none = NULL;
    const size_t shape[4] = {1, 1, 4, 4};
    nyquist_status status_unknown = nyquist_layer_create(device, "median-pool", 0, NULL, NULL, NULL, 4, shape, &none);
    printf("unknown operator: status %d, \"%s\"\n", (int)status_unknown, nyquist_last_error());
    failed |= status_unknown != NYQUIST_INVALID_ARGUMENT || strstr(nyquist_last_error(), "median-pool") == NULL;

    nyquist_device_release(device);
    clReleaseCommandQueue(queue);
    clReleaseContext(context);
    printf(failed ? "FAILED\n" : "ok\n");
    return failed;
}
