import COpenCL

/// A device memory object, released when the last reference goes away.
///
/// `@unchecked Sendable`: the handle is immutable after `init`, OpenCL memory objects may be
/// used from any host thread, and every command that touches one is enqueued under the owning
/// ``OpenCLContext``'s lock.
package final class OpenCLBuffer: @unchecked Sendable {
    let handle: cl_mem
    /// Size in bytes.
    package let byteCount: Int
    /// The context it was allocated in.
    package let context: OpenCLContext
    /// The buffer this one is a sub-buffer of (kept alive while the view exists).
    package let parent: OpenCLBuffer?
    /// Byte offset into `parent` (0 when this is not a sub-buffer).
    package let parentOffset: Int
    /// Whether the context's counters count it (false for a caller's buffer, which it holds one
    /// reference to but did not allocate).
    let counted: Bool

    init(
        handle: cl_mem, byteCount: Int, context: OpenCLContext, parent: OpenCLBuffer? = nil, parentOffset: Int = 0,
        counted: Bool = true
    ) {
        self.handle = handle
        self.byteCount = byteCount
        self.context = context
        self.parent = parent
        self.parentOffset = parentOffset
        self.counted = counted
    }

    deinit {
        // Releasing while commands are queued is safe: OpenCL defers the free until they finish.
        clReleaseMemObject(handle)
        if counted { context.noteRelease(isSubBuffer: parent != nil, byteCount: byteCount) }
    }

    /// Number of `Float`s the buffer holds.
    package var floatCount: Int { byteCount / MemoryLayout<Float>.stride }
}
