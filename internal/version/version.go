// Package version is the build's version, the same for every binary:
// stamped by `make release` (-ldflags "-X github.com/amtops/amtops/internal/version.stamped=v1.2.3"),
// else what the Go toolchain recorded (module version or VCS revision),
// else "dev".
package version

import "runtime/debug"

var stamped = ""

// String is the version to show.
func String() string {
	if stamped != "" {
		return stamped
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	v := bi.Main.Version
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 && (v == "" || v == "(devel)") {
			v = "dev-" + s.Value[:12]
		}
	}
	if v == "" || v == "(devel)" {
		return "dev"
	}
	return v
}
