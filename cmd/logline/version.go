package main

import (
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"

	"github.com/logline/logline/abi"
)

// versionInfo is what `logline version` prints.
type versionInfo struct {
	// Version is the main module's version ("(devel)" when unknown, as in
	// a build from a checkout without a version stamp).
	Version string `json:"version"`
	// Commit is the VCS revision the binary was built from ("" when the
	// build recorded none), Modified whether the work tree had changes.
	Commit     string `json:"commit"`
	CommitTime string `json:"commit_time,omitempty"`
	Modified   bool   `json:"modified"`
	Go         string `json:"go"`
	Platform   string `json:"platform"`
	// ABI is the guest–host ABI version the host serves (abi.Version).
	ABI int `json:"abi_version"`
}

const develVersion = "(devel)"

// versionOf reads the version from build information (debug.ReadBuildInfo).
func versionOf(bi *debug.BuildInfo, ok bool) versionInfo {
	v := versionInfo{Version: develVersion, Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH, ABI: abi.Version}
	if !ok || bi == nil {
		return v
	}
	if bi.Main.Version != "" {
		v.Version = bi.Main.Version
	}
	if bi.GoVersion != "" {
		v.Go = bi.GoVersion
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Commit = s.Value
		case "vcs.time":
			v.CommitTime = s.Value
		case "vcs.modified":
			v.Modified = s.Value == "true"
		}
	}
	return v
}

// serverVersion is the version GET /api/status reports: the module
// version, and the commit when the build recorded one.
func serverVersion() string {
	v := versionOf(debug.ReadBuildInfo())
	if v.Commit == "" {
		return v.Version
	}
	c := v.Commit
	if len(c) > 12 {
		c = c[:12]
	}
	if v.Modified {
		c += "+modified"
	}
	return v.Version + " " + c
}

func (a *app) printVersion() error {
	v := versionOf(debug.ReadBuildInfo())
	if a.json {
		return a.writeJSON(v)
	}
	commit := v.Commit
	switch {
	case commit == "":
		commit = "unknown"
	case v.Modified:
		commit += " (modified)"
	}
	a.printf("logline %s\ncommit   %s\ngo       %s %s\nabi      %d\n", v.Version, commit, v.Go, v.Platform, v.ABI)
	return nil
}

func (a *app) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the module version, commit, Go version and ABI version",
		Args:  noArgs,
		RunE:  func(*cobra.Command, []string) error { return a.printVersion() },
	}
}
