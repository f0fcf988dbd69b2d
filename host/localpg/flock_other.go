//go:build !unix || solaris || illumos || aix

package localpg

import (
	"errors"
	"os"
)

// tryLock is unsupported here; stale temp dirs are then never swept.
func tryLock(*os.File) error { return errors.ErrUnsupported }
