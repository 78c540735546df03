package testnet

import (
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var (
	buildMu  sync.Mutex
	buildDir string
	built    = map[string]string{} // command name to binary
)

// Main runs a package's tests and then removes the binaries ShuntBinary
// and ControlBinary built, if any. Use it as the package's TestMain.
func Main(m *testing.M) {
	code := m.Run()
	RemoveBuilt()
	os.Exit(code)
}

// RemoveBuilt removes the binaries ShuntBinary and ControlBinary built,
// for a TestMain of its own.
func RemoveBuilt() {
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
}

// ShuntBinary builds cmd/shunt once per test process, under /tmp so that a
// process that has dropped to UID 1337 can still read it.
func ShuntBinary(t testing.TB) string { return binary(t, "shunt") }

// ControlBinary builds cmd/shunt-control once per test process.
func ControlBinary(t testing.TB) string { return binary(t, "shunt-control") }

func binary(t testing.TB, name string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if bin, ok := built[name]; ok {
		return bin
	}
	if buildDir == "" {
		dir, err := os.MkdirTemp("/tmp", "shunt-test-")
		if err == nil {
			err = os.Chmod(dir, 0o755)
		}
		if err != nil {
			t.Fatal(err)
		}
		buildDir = dir
	}
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	bin := filepath.Join(buildDir, name)
	if out, err := exec.Command("go", "build", "-o", bin, filepath.Join(root, "cmd", name)).CombinedOutput(); err != nil {
		t.Fatalf("go build: %v: %s", err, out)
	}
	built[name] = bin
	return bin
}

// RaiseFileLimit lets the test process hold n descriptors (root may raise
// the hard limit).
func RaiseFileLimit(t testing.TB, n uint64) {
	t.Helper()
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: n, Max: n}); err != nil {
		t.Fatalf("raising the descriptor limit to %d: %v", n, err)
	}
}

// DialConn connects from inside the namespace, as a process with the given
// UID and GID would: the socket is made with that filesystem UID and GID,
// which is what netfilter's owner match reads. src, if valid, is bound.
func (n *NS) DialConn(src netip.Addr, dst netip.AddrPort, uid, gid uint32) (*net.TCPConn, error) {
	var c net.Conn
	err := n.Do(func() error {
		unix.Setfsgid(int(gid))
		unix.Setfsuid(int(uid))
		defer func() {
			unix.Setfsuid(0)
			unix.Setfsgid(0)
		}()
		d := net.Dialer{Timeout: 2 * time.Second}
		if src.IsValid() {
			d.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
		}
		var err error
		network := "tcp4"
		if dst.Addr().Is6() {
			network = "tcp6"
		}
		c, err = d.Dial(network, dst.String())
		return err
	})
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// HTTPGet fetches url from inside the namespace (as root, so capture rules
// exempting only the proxy still see an app) and returns status and body.
func (n *NS) HTTPGet(url string) (int, string, error) {
	resp, err := n.HTTPClient().Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// Listener is a TCP listener inside a namespace, for tests that script the
// far side of a connection.
func (n *NS) Listener(t testing.TB, addr string) *net.TCPListener {
	t.Helper()
	var ln net.Listener
	network := "tcp4"
	if ap, err := netip.ParseAddrPort(addr); err == nil && ap.Addr().Is6() {
		network = "tcp6"
	}
	if err := n.Do(func() (err error) { ln, err = net.Listen(network, addr); return err }); err != nil {
		t.Fatalf("listen %s in %s: %v", addr, n.Name, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.(*net.TCPListener)
}

// ExchangeUDP sends msg to dst from inside the namespace, from a socket
// made as the given UID and GID (as DialConn), and returns the first
// datagram back and who sent it.
func (n *NS) ExchangeUDP(dst netip.AddrPort, uid, gid uint32, msg string) (reply string, from netip.AddrPort, err error) {
	var c *net.UDPConn
	err = n.Do(func() error {
		unix.Setfsgid(int(gid))
		unix.Setfsuid(int(uid))
		defer func() {
			unix.Setfsuid(0)
			unix.Setfsgid(0)
		}()
		network := "udp4"
		if dst.Addr().Is6() {
			network = "udp6"
		}
		var err error
		c, err = net.ListenUDP(network, nil)
		return err
	})
	if err != nil {
		return "", from, err
	}
	defer c.Close()
	if _, err := c.WriteToUDPAddrPort([]byte(msg), dst); err != nil {
		return "", from, err
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 512)
	k, from, err := c.ReadFromUDPAddrPort(buf)
	return string(buf[:k]), netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), err
}

// ServeUDP answers every datagram on addr inside the namespace with tag,
// from a socket made as the given UID and GID (as DialConn).
func (n *NS) ServeUDP(t testing.TB, addr, tag string, uid, gid uint32) {
	t.Helper()
	network := "udp4"
	if strings.HasPrefix(addr, "[") {
		network = "udp6"
	}
	var c net.PacketConn
	if err := n.Do(func() (err error) {
		unix.Setfsgid(int(gid))
		unix.Setfsuid(int(uid))
		defer func() {
			unix.Setfsuid(0)
			unix.Setfsgid(0)
		}()
		c, err = net.ListenPacket(network, addr)
		return err
	}); err != nil {
		t.Fatalf("listen udp %s in %s: %v", addr, n.Name, err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			_, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = c.WriteTo([]byte(tag), from)
		}
	}()
}
