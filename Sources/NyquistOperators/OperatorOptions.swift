import NyquistCore

/// One option of an operator, as `nyquist run` spells it (`--filter-size` is `filter-size`).
public struct OperatorOption: Sendable, Hashable {
    /// The name without dashes.
    public let name: String
    /// What it sets, with its default, for help texts and error messages.
    public let help: String

    /// An option called `name`.
    public init(_ name: String, _ help: String) {
        self.name = name
        self.help = help
    }
}

/// Option values by name, as given on a command line or in a binding's keyword arguments
/// (strings, parsed and validated by the operator that reads them).
public struct OperatorOptions: Sendable, Hashable {
    /// The values by option name (no dashes).
    public var values: [String: String]

    /// Options with these values (none: every default).
    public init(_ values: [String: String] = [:]) {
        self.values = values
    }

    /// Throws for a value whose name is not among `allowed` (the operator's own options).
    func check(allowedBy descriptor: OperatorDescriptor) throws {
        let allowed = Set(descriptor.options.map(\.name))
        if let unknown = values.keys.sorted().first(where: { !allowed.contains($0) }) {
            let list = descriptor.options.map { "--" + $0.name }.joined(separator: ", ")
            throw NyquistError(
                .invalidConfiguration,
                "option --\(unknown) does not apply to \(descriptor.name) (its options: \(list.isEmpty ? "none" : list))")
        }
    }

    /// The integer option `name`, or `fallback` when not given.
    func int(_ name: String, _ fallback: Int) throws -> Int { try int(name) ?? fallback }

    /// The integer option `name`, or nil when not given.
    func int(_ name: String) throws -> Int? {
        try parsed(name, "a whole number") { Int($0) }
    }

    /// The option `name` read by `parse`, nil when not given; an option `parse` refuses is an
    /// error saying it must be `requirement`.
    private func parsed<Value>(_ name: String, _ requirement: String, _ parse: (String) -> Value?) throws -> Value? {
        guard let text = values[name] else { return nil }
        guard let value = parse(text) else {
            throw NyquistError(.invalidConfiguration, "option --\(name) must be \(requirement), got '\(text)'")
        }
        return value
    }

    /// The unsigned integer option `name` (a seed), or `fallback` when not given.
    func seed(_ name: String, _ fallback: UInt64) throws -> UInt64 {
        try parsed(name, "a whole number >= 0") { UInt64($0) } ?? fallback
    }

    /// The real option `name`, or `fallback` when not given; must be finite.
    func double(_ name: String, _ fallback: Double) throws -> Double {
        try parsed(name, "a finite number") { Double($0).flatMap { $0.isFinite ? $0 : nil } } ?? fallback
    }

    /// The yes/no option `name` (`true` or `false`), or `fallback` when not given.
    func flag(_ name: String, _ fallback: Bool) throws -> Bool {
        try parsed(name, "true or false") { Bool($0) } ?? fallback
    }

    /// The option `name` as one of `Choice`'s raw values, or `fallback` when not given.
    func choice<Choice: RawRepresentable & CaseIterable>(_ name: String, _ fallback: Choice) throws -> Choice
    where Choice.RawValue == String {
        guard let text = values[name] else { return fallback }
        guard let value = Choice(rawValue: text) else {
            let list = Choice.allCases.map(\.rawValue).joined(separator: ", ")
            throw NyquistError(.invalidConfiguration, "unknown \(name) '\(text)'; use \(list)")
        }
        return value
    }
}
