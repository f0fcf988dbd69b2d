package localpg

import "syscall"

// setPdeathsig makes the kernel send SIGQUIT (immediate shutdown) to the
// server when the thread that started it dies, i.e. when our process dies.
func setPdeathsig(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGQUIT }
