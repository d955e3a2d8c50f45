package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
)

// versionString says which build this is, from what the Go toolchain
// stamped into the binary: the module version ("(devel)" for a build from a
// checkout), the commit with its time and whether the tree had changes,
// and the Go version.
func versionString() string {
	v, rev, at, dirty := "(devel)", "", "", false
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				at = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
	}
	var parts []string
	parts = append(parts, v)
	switch {
	case rev != "":
		if len(rev) > 12 {
			rev = rev[:12]
		}
		c := "commit " + rev
		if at != "" {
			c += " (" + at + ")"
		}
		if dirty {
			c += " with uncommitted changes"
		}
		parts = append(parts, c)
	default:
		parts = append(parts, "commit unknown (no VCS stamp: go build and make build in a git clone add it; go run and builds in a git worktree do not)")
	}
	parts = append(parts, runtime.Version()+" "+runtime.GOOS+"/"+runtime.GOARCH)
	return strings.Join(parts, ", ")
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "print the version, the commit it was built from and the Go version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "sluice %s\n", versionString())
			return err
		},
	}
}
