import ArgumentParser
import Nyquist

/// `nyquist devices`: the OpenCL devices of this machine, with the default one marked.
struct Devices: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the OpenCL devices.",
        discussion: """
            Prints index, name, type, platform, driver version, global memory and compute units \
            of every device of every OpenCL platform; '*' marks the default device (NYQUIST_DEVICE \
            if set, else the first GPU, else the first device). The index or any name substring \
            can be passed to --device. With no OpenCL platform installed it says which package \
            to install and exits 1.
            """)

    func run() throws {
        let devices = try Device.all()
        guard !devices.isEmpty else {
            throw CLIFailure(
                "OpenCL platforms are installed but offer no device; install a driver, e.g. "
                    + "`apt-get install pocl-opencl-icd` (CPU), and check with `clinfo -l`")
        }
        let defaultIndex: Int?
        var note = "* default device"
        do {
            defaultIndex = try Device.default().info.index
        } catch {
            defaultIndex = nil
            note = "no default device: \(CLIFailure(error).message)"
        }
        var rows = [["", "index", "name", "type", "platform", "driver", "global memory", "compute units"]]
        for device in devices {
            rows.append([
                device.index == defaultIndex ? "*" : "", String(device.index), device.name, device.typeName,
                device.platformName, device.driverVersion, Format.bytes(device.globalMemorySize),
                String(device.computeUnits),
            ])
        }
        for line in Format.table(rows, rightAligned: [1, 6, 7]) { print(line) }
        print(note)
    }
}
