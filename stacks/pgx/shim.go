// pgssl's attempt-protocol shim for the Go drivers (docs/adding-a-stack.md): pgx v4
// (stacks/pgx) and lib/pq (stacks/lib-pq, `shim lib-pq`), both as Debian ships their sources,
// built offline in GOPATH mode by run-shim. One process, a goroutine per attempt.
//
// Options reach the driver as a keyword/value connection string ("host=... sslmode=..."),
// which both parse as libpq does and both document; nothing is converted. hostaddr is the
// harness's name service, not an option of either driver: certificates name hosts such as
// common-name.pg-ssltest.test that resolve nowhere, so the driver's documented dial hook (pgx:
// Config.LookupFunc and DialFunc; lib/pq: Connector.Dialer) connects to the hostaddr while the
// driver keeps the host for SNI and its certificate check, as an /etc/hosts entry would.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/jackc/pgconn"
	"github.com/jackc/pgx/v4"
	"github.com/lib/pq"
)

const protocol = 1

type request struct {
	Type         string      `json:"type"`
	ID           uint64      `json:"id"`
	Params       [][2]string `json:"params"`
	SessionQuery string      `json:"session_query"`
	DeadlineMs   uint64      `json:"deadline_ms"`
}

var (
	out   = json.NewEncoder(os.Stdout)
	outMu sync.Mutex
)

func send(v interface{}) {
	outMu.Lock()
	defer outMu.Unlock()
	_ = out.Encode(v)
}

func failed(message, code, class string) map[string]interface{} {
	f := map[string]interface{}{"message": message}
	if code != "" {
		f["code"] = code
	}
	if class != "" {
		f["class"] = class
	}
	return map[string]interface{}{"failed": f}
}

// Which class a file keyword's missing file means.
var missingFileClass = map[string]string{
	"sslrootcert": "root_cert_missing",
	"sslcert":     "client_key_invalid",
	"sslkey":      "client_key_invalid",
}

// fromError reports an error as the driver's users see it: its text, and a SQLSTATE or Go type.
func fromError(err error, params [][2]string) map[string]interface{} {
	var pgErr *pgconn.PgError
	var pqErr *pq.Error
	var pathErr *fs.PathError
	switch {
	case errors.As(err, &pathErr) && errors.Is(err, fs.ErrNotExist):
		// A file keyword's file is missing: the keyword tells which class that is.
		for _, kv := range params {
			if class, ok := missingFileClass[kv[0]]; ok && kv[1] == pathErr.Path {
				return failed(err.Error(), "ENOENT", class)
			}
		}
	case errors.As(err, &pgErr):
		return failed(err.Error(), pgErr.Code, "")
	case errors.As(err, &pqErr):
		return failed(err.Error(), string(pqErr.Code), "")
	}
	return failed(err.Error(), fmt.Sprintf("%T", errors.Unwrap(err)), "")
}

func quote(v string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

// split returns the connection string without hostaddr, and host -> address.
func split(params [][2]string) (string, map[string]string, error) {
	var parts []string
	var hosts, addrs []string
	for _, kv := range params {
		switch kv[0] {
		case "hostaddr":
			addrs = strings.Split(kv[1], ",")
			continue
		case "host":
			hosts = strings.Split(kv[1], ",")
		}
		parts = append(parts, kv[0]+"="+quote(kv[1]))
	}
	m := map[string]string{}
	switch {
	case len(addrs) == 1:
		m[""] = addrs[0]
	case len(addrs) == len(hosts):
		for i, h := range hosts {
			m[h] = addrs[i]
		}
	case len(addrs) > 0:
		return "", nil, errors.New("no hostaddr option: a host list with its own address list cannot be expressed")
	}
	return strings.Join(parts, " "), m, nil
}

func address(m map[string]string, host string) string {
	if a, ok := m[host]; ok {
		return a
	}
	if a, ok := m[""]; ok {
		return a
	}
	return host
}

// redirect dials the harness's address for the host of addr.
func redirect(m map[string]string, dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err == nil && network != "unix" {
			addr = net.JoinHostPort(address(m, host), port)
		}
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &lastWords{Conn: c}, nil
	}
}

// lastWords lets the server's last words through. When the server refuses the client
// certificate it sends an alert and closes; under TLS 1.3 that comes after the client's
// handshake, while the driver writes its startup message. That write then fails with a reset
// or a broken pipe, a matter of timing, and the driver reports the write without reading the
// alert. Here a failed write is held back until reading shows nothing more is coming, so
// crypto/tls sees the alert, as libpq does (it reads before it reports a failed write) and as
// the harness's own stacks do (harness/src/client/last_words.rs).
type lastWords struct {
	net.Conn
	mu       sync.Mutex
	writeErr error
}

func (c *lastWords) held() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writeErr
}

func (c *lastWords) Write(b []byte) (int, error) {
	if c.held() != nil {
		return len(b), nil
	}
	n, err := c.Conn.Write(b)
	if err != nil && (errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)) {
		c.mu.Lock()
		c.writeErr = err
		c.mu.Unlock()
		return len(b), nil
	}
	return n, err
}

func (c *lastWords) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n == 0 && err != nil && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) {
		if held := c.held(); held != nil {
			return 0, held
		}
	}
	return n, err
}

var versionNames = map[uint16]string{
	tls.VersionTLS10: "TLSv1", tls.VersionTLS11: "TLSv1.1",
	tls.VersionTLS12: "TLSv1.2", tls.VersionTLS13: "TLSv1.3",
}

func connected(conn net.Conn, row []string) map[string]interface{} {
	c := map[string]interface{}{"encrypted": false, "tls_version": "", "cipher": "", "columns": row}
	if t, ok := conn.(*tls.Conn); ok {
		s := t.ConnectionState()
		c["encrypted"] = true
		c["tls_version"] = versionNames[s.Version]
		c["cipher"] = tls.CipherSuiteName(s.CipherSuite)
	}
	return map[string]interface{}{"connected": c}
}

func attemptPgx(ctx context.Context, r request) map[string]interface{} {
	dsn, m, err := split(r.Params)
	if err != nil {
		return failed("pgx has "+err.Error(), "", "unsupported")
	}
	config, err := pgx.ParseConfig(dsn)
	if err != nil {
		return fromError(err, r.Params)
	}
	lookup := config.LookupFunc
	config.LookupFunc = func(ctx context.Context, host string) ([]string, error) {
		if a := address(m, host); a != host {
			return []string{a}, nil
		}
		return lookup(ctx, host)
	}
	config.DialFunc = redirect(m, config.DialFunc)
	conn, err := pgx.ConnectConfig(ctx, config)
	if err != nil {
		return fromError(err, r.Params)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, r.SessionQuery, pgx.QuerySimpleProtocol(true))
	if err != nil {
		return fromError(err, r.Params)
	}
	defer rows.Close()
	var row []string
	if rows.Next() {
		for _, raw := range rows.RawValues() {
			row = append(row, string(raw))
		}
	}
	if err := rows.Err(); err != nil {
		return fromError(err, r.Params)
	}
	return connected(conn.PgConn().Conn(), row)
}

// pqDialer is lib/pq's Dialer hook; it keeps the net.Conn so the TLS state can be read.
type pqDialer struct {
	m    map[string]string
	conn net.Conn
}

func (d *pqDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := redirect(d.m, (&net.Dialer{}).DialContext)(ctx, network, addr)
	d.conn = c
	return c, err
}
func (d *pqDialer) Dial(network, addr string) (net.Conn, error) {
	return d.DialContext(context.Background(), network, addr)
}
func (d *pqDialer) DialTimeout(network, addr string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return d.DialContext(ctx, network, addr)
}

func attemptPq(ctx context.Context, r request) map[string]interface{} {
	dsn, m, err := split(r.Params)
	if err != nil {
		return failed("lib/pq has "+err.Error(), "", "unsupported")
	}
	for _, kv := range r.Params {
		if kv[0] == "host" && strings.Contains(kv[1], ",") {
			return failed("lib/pq takes one host: it has no host lists", "", "unsupported")
		}
	}
	connector, err := pq.NewConnector(dsn)
	if err != nil {
		return fromError(err, r.Params)
	}
	dialer := &pqDialer{m: m}
	connector.Dialer(dialer)
	db := sql.OpenDB(connector)
	defer db.Close()
	db.SetMaxOpenConns(1)
	sqlConn, err := db.Conn(ctx)
	if err != nil {
		return fromError(err, r.Params)
	}
	defer sqlConn.Close()
	rows, err := sqlConn.QueryContext(ctx, r.SessionQuery)
	if err != nil {
		return fromError(err, r.Params)
	}
	defer rows.Close()
	var row []string
	if rows.Next() {
		cols, _ := rows.Columns()
		values := make([]sql.NullString, len(cols))
		ptrs := make([]interface{}, len(cols))
		for i := range values {
			ptrs[i] = &values[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return fromError(err, r.Params)
		}
		for _, v := range values {
			row = append(row, v.String)
		}
	}
	if err := rows.Err(); err != nil {
		return fromError(err, r.Params)
	}
	return connected(pqSocket(sqlConn, dialer.conn), row)
}

// pqSocket is lib/pq's current socket (its unexported conn.c: the *tls.Conn after the
// upgrade), which lib/pq does not expose; the dialled socket if it cannot be read.
func pqSocket(c *sql.Conn, dialled net.Conn) net.Conn {
	socket := dialled
	_ = c.Raw(func(dc interface{}) error {
		v := reflect.ValueOf(dc)
		if v.Kind() == reflect.Ptr {
			if f := v.Elem().FieldByName("c"); f.IsValid() && f.Type() == reflect.TypeOf((*net.Conn)(nil)).Elem() {
				socket = *(*net.Conn)(unsafe.Pointer(f.UnsafeAddr()))
			}
		}
		return nil
	})
	return socket
}

// Set by run-shim from the Debian packages' versions (-ldflags -X).
var pgxVersion, pqVersion = "unknown", "unknown"

func main() {
	driver := "pgx"
	if len(os.Args) > 1 {
		driver = os.Args[1]
	}
	hello := map[string]interface{}{
		"type": "hello", "protocol": protocol, "name": driver,
		"tls_library": "go-crypto-tls", "tls_version": strings.TrimPrefix(runtime.Version(), "go"),
		"options": []string{},
	}
	attempt := attemptPgx
	switch driver {
	case "pgx":
		hello["version"] = pgxVersion
	case "lib-pq":
		hello["version"] = pqVersion
		attempt = attemptPq
	default:
		fmt.Fprintf(os.Stderr, "unknown driver %q (pgx, lib-pq)\n", driver)
		os.Exit(2)
	}
	send(hello)
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<24)
	for in.Scan() {
		var r request
		if err := json.Unmarshal(in.Bytes(), &r); err != nil || r.Type != "request" {
			continue
		}
		go func(r request) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Duration(r.DeadlineMs)*time.Millisecond)
			defer cancel()
			send(map[string]interface{}{"type": "reply", "id": r.ID, "result": attempt(ctx, r)})
		}(r)
	}
}
