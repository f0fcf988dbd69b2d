package localpg

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ErrNotFound is wrapped by the error FindBinDir (and Start, ForTests)
// returns when no PostgreSQL server binaries are installed.
var ErrNotFound = errors.New("PostgreSQL server binaries (initdb, postgres) not found")

// debianRoot is where Debian-family distributions install the server binaries
// of each major version (/usr/lib/postgresql/<version>/bin).
var debianRoot = "/usr/lib/postgresql"

// FindBinDir returns the directory holding the PostgreSQL server binaries
// initdb and postgres. It looks, in order, at the directories of initdb and
// postgres found in PATH, at `pg_config --bindir`, and at the highest
// versioned /usr/lib/postgresql/*/bin.
func FindBinDir() (string, error) {
	var searched []string
	try := func(dir string) bool {
		if dir == "" || slices.Contains(searched, dir) {
			return false
		}
		searched = append(searched, dir)
		return hasServerBinaries(dir)
	}

	for _, name := range []string{"initdb", "postgres"} {
		if p, err := exec.LookPath(name); err == nil {
			if abs, err := filepath.Abs(p); err == nil {
				p = abs
			}
			if dir := filepath.Dir(p); try(dir) {
				return dir, nil
			}
		}
	}
	pathNote := "PATH (" + os.Getenv("PATH") + ")"

	pgConfigNote := "pg_config --bindir (pg_config not in PATH)"
	if p, err := exec.LookPath("pg_config"); err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := exec.CommandContext(ctx, p, "--bindir").Output()
		cancel()
		if err != nil {
			pgConfigNote = fmt.Sprintf("pg_config --bindir (failed: %v)", err)
		} else {
			dir := strings.TrimSpace(string(out))
			pgConfigNote = fmt.Sprintf("pg_config --bindir (%s)", dir)
			if try(dir) {
				return dir, nil
			}
		}
	}

	versions, _ := filepath.Glob(filepath.Join(debianRoot, "*", "bin"))
	slices.SortFunc(versions, func(a, b string) int {
		return -compareVersions(filepath.Base(filepath.Dir(a)), filepath.Base(filepath.Dir(b)))
	})
	for _, dir := range versions {
		if try(dir) {
			return dir, nil
		}
	}

	return "", fmt.Errorf("%w: searched %s, %s and %s/*/bin; install the PostgreSQL server "+
		"(Debian/Ubuntu: apt-get install postgresql; Fedora: dnf install postgresql-server; "+
		"macOS: brew install postgresql) or put its bin directory in PATH",
		ErrNotFound, pathNote, pgConfigNote, debianRoot)
}

func hasServerBinaries(dir string) bool {
	for _, name := range []string{"initdb", "postgres"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
			return false
		}
	}
	return true
}

// compareVersions compares dotted numeric versions such as "9.6" and "15";
// non-numeric parts compare as strings after numeric ones.
func compareVersions(a, b string) int {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) || i < len(bs); i++ {
		var x, y string
		if i < len(as) {
			x = as[i]
		}
		if i < len(bs) {
			y = bs[i]
		}
		xn, xerr := strconv.Atoi(x)
		yn, yerr := strconv.Atoi(y)
		switch {
		case xerr == nil && yerr == nil:
			if xn != yn {
				return xn - yn
			}
		case xerr == nil:
			return 1
		case yerr == nil:
			return -1
		default:
			if c := strings.Compare(x, y); c != 0 {
				return c
			}
		}
	}
	return 0
}
