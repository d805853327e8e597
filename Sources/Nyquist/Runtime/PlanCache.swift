import NyquistCL
import NyquistCore

/// The launches of one pass of one operator at one input shape, decided once (see Plans/):
/// programs, constant tables, launch sizes and fixed arguments. Running it binds the call's
/// buffers and enqueues.
final class CompiledPass: Sendable {
    let launches: [PreparedLaunch]

    init(_ launches: [PreparedLaunch]) {
        self.launches = launches
    }

    /// Enqueues every launch with `buffers` bound by number (each plan documents its numbering).
    func run(on device: Device, _ buffers: OpenCLBuffer...) throws {
        try device.context.enqueue(launches, buffers: buffers)
    }
}

/// What a plan is cached by: the operator's configuration, the pass, the input shape (and any
/// other value the launches depend on), and the tuning state it was built under.
struct PlanKey<Configuration: Hashable & Sendable>: Hashable, Sendable {
    let configuration: Configuration
    let pass: PlanPass
    let input: Shape4D
    var tuning = 0
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
    /// tuning state changed); later requests are one dictionary lookup.
    func compiledPass<Configuration: Hashable & Sendable>(
        _ key: PlanKey<Configuration>, build: () throws -> [PreparedLaunch]
    ) throws -> CompiledPass {
        var key = key
        key.tuning = tuning.withLock { $0.generation }
        let boxed = AnyPlanKey(base: AnyHashable(key))
        if let cached = plans.withLock({ $0[boxed] }) { return cached }
        let built = CompiledPass(try build())
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
}
