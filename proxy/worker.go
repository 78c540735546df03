package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"
)

// This file is a worker's side of a supervised proxy (see supervisor.go):
// it adopts the capture listeners it inherited, tells the supervisor when
// it is ready, and answers its requests.

// WorkerEnv tells a process started by a supervisor that it is a worker,
// and which inherited descriptors are which: the names of their listeners
// ("virtualOutbound,virtualInbound,…") in the order of descriptors 4 and
// up; descriptor 3 is its control socket.
const WorkerEnv = "SHUNT_PROXY_WORKER"

// WorkerListeners takes the listeners a supervisor passed down, and the
// control socket; ok is false when this process is not a worker.
func WorkerListeners() (ctl *net.UnixConn, ok bool, err error) {
	dirs := os.Getenv(WorkerEnv)
	if dirs == "" {
		return nil, false, nil
	}
	c, err := net.FileConn(os.NewFile(3, "ctl"))
	if err != nil {
		return nil, true, err
	}
	return c.(*net.UnixConn), true, nil
}

// AdoptListeners makes p serve the capture listeners inherited from a
// supervisor, instead of binding its own.
func (p *Proxy) AdoptListeners() error {
	for i, name := range strings.Split(os.Getenv(WorkerEnv), ",") {
		var lst *listener
		for _, l := range p.gen.Load().listeners {
			if l.name == name {
				lst = l
			}
		}
		f := os.NewFile(uintptr(4+i), "listener-"+name)
		ln, err := net.FileListener(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("inherited listener %d: %w", i, err)
		}
		if lst == nil {
			ln.Close()
			return fmt.Errorf("inherited listener %d: this configuration has no listener %q", i, name)
		}
		p.adopt(ln.(*net.TCPListener), lst)
	}
	p.adopted, p.listened = true, true
	return nil
}

// ServeWorker runs a worker: it tells the supervisor it is ready, answers
// its requests on ctl, and serves until ctx ends (SIGTERM), then drains.
func (p *Proxy) ServeWorker(ctx context.Context, ctl *net.UnixConn) error {
	// A worker whose supervisor is gone (killed, say) drains and exits
	// rather than serve on unsupervised.
	ctx, orphaned := context.WithCancel(ctx)
	defer orphaned()
	errc := make(chan error, 1)
	go func() { errc <- p.Serve(ctx) }()
	for !p.ready.Load() {
		select {
		case err := <-errc:
			return err
		case <-time.After(5 * time.Millisecond):
		}
	}
	if _, err := io.WriteString(ctl, "ready\n"); err != nil {
		return err
	}
	go p.answerSupervisor(ctl, orphaned)
	return <-errc
}

func (p *Proxy) answerSupervisor(ctl *net.UnixConn, orphaned func()) {
	r := bufio.NewReader(ctl)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			p.log.Warn("the supervisor is gone; draining", "err", err)
			orphaned()
			return
		}
		var b strings.Builder
		switch cmd := strings.TrimSpace(line); {
		case cmd == "metrics":
			line, err := encodeFamilies(p.registry)
			if err != nil {
				fmt.Fprintf(&b, "# error %v\n", err)
			} else {
				b.WriteString(line + "\n")
			}
		case strings.HasPrefix(cmd, "level "):
			if err := p.level.UnmarshalText([]byte(strings.TrimPrefix(cmd, "level "))); err != nil {
				fmt.Fprintf(&b, "# error %v\n", err)
			}
		default:
			fmt.Fprintf(&b, "# error unknown request %q\n", cmd)
		}
		b.WriteString("# EOF\n")
		if _, err := io.WriteString(ctl, b.String()); err != nil {
			return
		}
	}
}
