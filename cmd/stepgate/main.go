// Command stepgate is a reverse proxy that demands step-up MFA through
// PingOne on the paths an operator marks. main only wires signals to run.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "stepgate:", err)
		stop()
		os.Exit(1)
	}
}
