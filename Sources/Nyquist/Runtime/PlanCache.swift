import NyquistCL
import NyquistCore

/// The launches of one pass of one operator at one input shape, decided once (see Plans/):
/// programs, constant tables, launch sizes and fixed arguments. Running it binds the call's
/// buffers and enqueues.
final class CompiledPass: Sendable {
    let launches: [PreparedLaunch]
    /// Element counts of the temporaries a run allocates (from the device's caching allocator)
    /// and binds after the caller's buffers, in this order.
    let temporaries: [Int]

    init(_ launches: [PreparedLaunch], temporaries: [Int] = []) {
        self.launches = launches
        self.temporaries = temporaries
    }

    /// Enqueues every launch with `buffers` bound by number (each plan documents its numbering),
    /// followed by the plan's temporaries. The temporaries go back to the cache on return,
    /// before the launches have run: safe, because every later use of their memory is
    /// enqueued after them on the device's in-order queue.
    func run(on device: Device, _ buffers: OpenCLBuffer...) throws {
        try run(on: device, buffers: buffers)
    }

    /// ``run(on:_:)`` with the buffers as an array (for plans that bind many, assembled per call),
    /// and the call's scalars (loss weights) for the launches' `.scaled` arguments.
    func run(on device: Device, buffers: [OpenCLBuffer], scalars: [Double] = []) throws {
        try wrappingDriverErrors {
            if temporaries.isEmpty { return try device.context.enqueue(launches, buffers: buffers, scalars: scalars) }
            let scratch = try temporaries.map { try DeviceTensor(shape: [$0], on: device) }
            try device.context.enqueue(launches, buffers: buffers + scratch.map(\.buffer), scalars: scalars)
        }
    }
}

/// What a plan is cached by: the operator's configuration, the pass, the input shape (and any
/// other value the launches depend on), and the tuning state it was built under (the database
/// generation and the pinned knobs, see ``TuningKey``).
struct PlanKey<Configuration: Hashable & Sendable>: Hashable, Sendable {
    let configuration: Configuration
    let pass: PlanPass
    let input: Shape4D
    var tuning = TuningKey()
}

/// A ``PlanKey`` of any configuration type.
///
/// `@unchecked Sendable`: it wraps only ``PlanKey`` values, which are `Sendable`; `AnyHashable`
/// itself cannot say so.
struct AnyPlanKey: Hashable, @unchecked Sendable {
    let base: AnyHashable
}

/// Which pass of an operator a plan runs.
enum PlanPass: Hashable, Sendable {
    /// Inference forward.
    case forward
    /// Training forward where it differs from inference (MaxPool2D: also writes indices).
    case trainingForward
    /// Backward from the saved input.
    case backward
    /// Backward from saved indices (MaxPool2D's argmax, APSPool2D's phases).
    case backwardFromIndices
    /// Forward from given indices (APSPool2D sampling the phases another layer chose).
    case forwardFromIndices
    /// Only the choice a forward makes, without its output (APSPool2D's phases, re-chosen for a
    /// backward that has no saved indices).
    case chooseIndices
    /// Loss values (TIPSPool2D's L_FM and L_undo partial sums), with or without a target.
    case losses(withTarget: Bool)
    /// A target built from the input shifted by this much (TIPSPool2D's L_undo target; the
    /// layer normalises the shift so that shifts giving the same target share a plan).
    case target(MapShift)
}

extension Device {
    /// The compiled pass for `key`, built by `build` on the first request (and again after the
    /// database was reloaded, or under other pinned knobs); later requests are one dictionary
    /// lookup.
    func compiledPass<Configuration: Hashable & Sendable>(
        _ key: PlanKey<Configuration>, build: () throws -> [PreparedLaunch]
    ) throws -> CompiledPass {
        try compiledPass(key) { CompiledPass(try build()) }
    }

    /// The compiled pass for `key` (a pass with temporaries: `build` returns the whole pass).
    func compiledPass<Configuration: Hashable & Sendable>(
        _ key: PlanKey<Configuration>, build: () throws -> CompiledPass
    ) throws -> CompiledPass {
        var key = key
        key.tuning = tuningKey
        let boxed = AnyPlanKey(base: AnyHashable(key))
        if let cached = plans.withLock({ $0[boxed] }) { return cached }
        let built = try wrappingDriverErrors(build)
        return plans.withLock { plans in
            if let raced = plans[boxed] { return raced }
            // A bound on what a process that sweeps shapes keeps: plans hold kernel objects.
            if plans.count >= Self.planLimit { plans.removeAll() }
            plans[boxed] = built
            return built
        }
    }

    /// The most compiled passes a device keeps.
    static let planLimit = 1024

    /// How many compiled passes the device holds (tests check that a call reuses its plan).
    package var compiledPassCount: Int { plans.withLock { $0.count } }
}

/// Runs `body`, reporting the driver's failures as ``NyquistError`` (kind `.outOfMemory` for
/// its out-of-memory codes, `.device` for the others) so that a layer call throws one type.
func wrappingDriverErrors<T>(_ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let error as OpenCLError {
        throw NyquistError(error.isOutOfMemory ? .outOfMemory : .device, error.description)
    }
}
