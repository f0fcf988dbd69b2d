package localpg

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ErrInUse is returned by Claim when another process holds the claim.
var ErrInUse = errors.New("in use")

// Claim makes this process the owner of a directory for as long as it
// runs: an exclusive lock on path (a file in that directory) that holds
// this process's pid. Release ends it (so does exiting). When another
// process holds it, Claim fails with ErrInUse naming that process's pid —
// the program that owns the directory, not the postgres it started.
func Claim(path string) (release func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := tryLock(f); err != nil && !errors.Is(err, errors.ErrUnsupported) {
		b, _ := os.ReadFile(path)
		f.Close()
		if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil && pid > 0 {
			return nil, fmt.Errorf("%w by pid %d", ErrInUse, pid)
		}
		return nil, ErrInUse
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return func() { f.Close() }, nil
}
