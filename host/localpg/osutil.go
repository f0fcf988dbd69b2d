package localpg

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// lookupRunAs returns the account to run postgres as, or nil to run as
// ourselves (when not root).
func lookupRunAs(name string) (*runAs, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	candidates := []string{"nobody", "postgres"}
	if name != "" {
		candidates = []string{name}
	}
	var errs []error
	for _, c := range candidates {
		u, err := user.Lookup(c)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil || uid == 0 {
			errs = append(errs, fmt.Errorf("user %s (uid %s) is not a usable unprivileged account", c, u.Uid))
			continue
		}
		return &runAs{name: c, uid: uint32(uid), gid: uint32(gid)}, nil
	}
	return nil, fmt.Errorf("localpg: running as root, and PostgreSQL refuses to; no unprivileged account "+
		"to run it as (tried %s): %w", strings.Join(candidates, ", "), errors.Join(errs...))
}

// childEnv is our environment without PG* variables (which initdb and
// postgres would honour) and with the C locale, so messages are English.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "LC_") || strings.HasPrefix(kv, "LANG=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LC_ALL=C", "LANG=C")
}

// checkPostmasterPid fails if postmaster.pid in dir names a live server.
func checkPostmasterPid(dir string) error {
	pidPath := filepath.Join(dir, "postmaster.pid")
	b, err := os.ReadFile(pidPath)
	if err != nil {
		return nil
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pid <= 0 || !postgresAlive(pid) {
		return nil // stale; postgres itself replaces it
	}
	// A postmaster's working directory is its data directory. If the pid
	// now belongs to a server of another data dir (pids get reused, e.g.
	// after a container restart), the file is stale, but postgres would
	// refuse to start over it: remove it.
	if cwd, err := os.Stat(fmt.Sprintf("/proc/%d/cwd", pid)); err == nil {
		if here, err := os.Stat(dir); err == nil && !os.SameFile(cwd, here) {
			if os.Remove(pidPath) == nil {
				return nil
			}
		}
	}
	return fmt.Errorf("localpg: data dir %s is in use by a running postgres server (pid %d); "+
		"stop it first (e.g. kill -INT %d)", dir, pid, pid)
}

// postgresAlive reports whether pid is a live (non-zombie) process that
// looks like postgres. Where /proc is unavailable any live process counts.
func postgresAlive(pid int) bool {
	if !processAlive(pid) {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// pid (comm) state ...
	s := string(stat)
	lp, rp := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if lp < 0 || rp < lp || rp+2 >= len(s) {
		return true
	}
	comm, state := s[lp+1:rp], s[rp+2]
	if state == 'Z' || state == 'X' {
		return false
	}
	return strings.Contains(comm, "postgres") || strings.Contains(comm, "postmaster")
}

// freePort asks the kernel for a free TCP port on 127.0.0.1.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("localpg: pick a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// quoteListElem quotes a directory for a comma-separated GUC list.
func quoteListElem(s string) string {
	if strings.ContainsAny(s, `, "`+"\t") {
		return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
	}
	return s
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// ensureTraversable makes every ancestor directory of path searchable by
// ra, adding the o+x bit where ra lacks search permission.
func ensureTraversable(path string, ra *runAs) error {
	if ra == nil {
		return nil
	}
	for d := filepath.Dir(path); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("localpg: %w", err)
		}
		uid, gid, ok := fileOwner(fi)
		if ok {
			mode := fi.Mode()
			var bit os.FileMode
			switch {
			case uid == ra.uid:
				bit = 0o100
			case gid == ra.gid:
				bit = 0o010
			default:
				bit = 0o001
			}
			if mode.Perm()&bit == 0 {
				keep := mode & (os.ModePerm | os.ModeSetuid | os.ModeSetgid | os.ModeSticky)
				if err := os.Chmod(d, keep|bit); err != nil {
					return fmt.Errorf("localpg: let user %s traverse %s: %w", ra.name, d, err)
				}
			}
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// chownTree hands dir and everything below it to ra.
func chownTree(dir string, ra *runAs) error {
	return filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, int(ra.uid), int(ra.gid))
	})
}

// sweepStaleTempRoots removes temp roots left behind by processes that died
// without stopping their server (their flock is gone).
func sweepStaleTempRoots() {
	roots, _ := filepath.Glob(filepath.Join(os.TempDir(), tempPrefix+"*"))
	for _, root := range roots {
		fi, err := os.Lstat(root)
		if err != nil || !fi.IsDir() {
			continue
		}
		if uid, _, ok := fileOwner(fi); ok && int(uid) != os.Geteuid() {
			continue
		}
		lockPath := filepath.Join(root, lockFileName)
		lfi, err := os.Stat(lockPath)
		if err != nil || time.Since(lfi.ModTime()) < time.Minute {
			continue
		}
		f, err := os.OpenFile(lockPath, os.O_RDWR, 0)
		if err != nil {
			continue
		}
		if tryLock(f) == nil && checkPostmasterPid(filepath.Join(root, "data")) == nil {
			_ = os.RemoveAll(root)
		}
		f.Close()
	}
}
