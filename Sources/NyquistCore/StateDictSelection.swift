/// PyTorch's strict `load_state_dict` rule, shared by every layer that has parameters.
///
/// A file may hold a whole model; `prefix` ("layer1.0.pool.") picks one submodule and is
/// stripped from the names. Every name under the prefix must be one the layer expects (or one it
/// knowingly ignores, such as BatchNorm's `num_batches_tracked`): an unexpected name is refused
/// and listed, because it usually means the wrong file, the wrong prefix or the wrong layer.
/// Names outside a non-empty prefix belong to other modules and are left alone.
public enum StateDictSelection {
    /// The tensors of `stateDict` under `prefix`, renamed without it.
    ///
    /// Throws `.invalidParameters` listing every unexpected name, or saying that nothing starts
    /// with a non-empty `prefix`. Missing names are not checked here: each layer reports them
    /// with their expected shapes.
    public static func select<T>(
        _ stateDict: [String: Tensor<T>], prefix: String, expected: [String], ignored: Set<String> = [], layer: String
    ) throws -> [String: Tensor<T>] {
        let known = Set(expected)
        var selected: [String: Tensor<T>] = [:]
        var unexpected: [String] = []
        var underPrefix = 0
        for (key, tensor) in stateDict where key.hasPrefix(prefix) {
            underPrefix += 1
            let name = String(key.dropFirst(prefix.count))
            if known.contains(name) {
                selected[name] = tensor
            } else if !ignored.contains(name) {
                unexpected.append(key)
            }
        }
        if !prefix.isEmpty, underPrefix == 0 {
            let sample = stateDict.keys.sorted().prefix(4).joined(separator: ", ")
            throw NyquistError(
                .invalidParameters,
                "\(layer): no parameter name starts with the prefix '\(prefix)' (the file has \(stateDict.count): \(sample)"
                    + (stateDict.count > 4 ? ", ...)" : ")"))
        }
        guard unexpected.isEmpty else {
            let hint = prefix.isEmpty ? "; name the submodule with a prefix if the file holds a whole model" : ""
            throw NyquistError(
                .invalidParameters,
                "\(layer): unexpected parameters \(unexpected.sorted().joined(separator: ", ")) (expected: "
                    + "\(expected.map { prefix + $0 }.joined(separator: ", ")))\(hint)")
        }
        return selected
    }
}
