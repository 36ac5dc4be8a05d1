// pgssl's attempt-protocol shim for pgjdbc (docs/adding-a-stack.md). One JVM for a whole run,
// a thread per attempt. Options reach pgjdbc as a JDBC URL, jdbc:postgresql://host:port/db?...,
// as pgjdbc users write them: libpq keywords keep their names where pgjdbc uses the same name
// (sslmode, sslcert, sslkey, sslrootcert, sslpassword, user, password, ...), take pgjdbc's
// documented name where it has another for the same option (application_name ->
// ApplicationName, connect_timeout -> connectTimeout, gssencmode -> gssEncMode), and are
// passed unchanged otherwise (pgjdbc ignores a URL parameter it does not know). No file is
// converted: pgjdbc reads keys as it reads them.
//
// hostaddr is the harness's name service, not a pgjdbc option (it has none): certificates name
// hosts such as common-name.pg-ssltest.test that resolve nowhere, so pgjdbc's documented
// socketFactory option gets a factory whose sockets connect to the hostaddr, while pgjdbc keeps
// the host for SNI and its host name check, as an /etc/hosts entry would.

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.io.FileOutputStream;
import java.io.FileDescriptor;
import java.io.IOException;
import java.lang.reflect.Field;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.net.SocketAddress;
import java.net.URLEncoder;
import java.nio.charset.StandardCharsets;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import javax.net.SocketFactory;
import javax.net.ssl.SSLSocket;
import com.google.gson.Gson;
import com.google.gson.GsonBuilder;

public class Shim {
    static final int PROTOCOL = 1;
    static PrintStream out;
    // JSON lines: Debian's Gson (libgoogle-gson-java); numbers read as Long keep ids integral.
    static final Gson JSON = new GsonBuilder().disableHtmlEscaping().setObjectToNumberStrategy(com.google.gson.ToNumberPolicy.LONG_OR_DOUBLE).create();

    // libpq keyword -> pgjdbc's documented name for the same option.
    static final Map<String, String> NAMES = Map.of(
            "application_name", "ApplicationName",
            "connect_timeout", "connectTimeout",
            "gssencmode", "gssEncMode",
            "target_session_attrs", "targetServerType");

    /** pgjdbc's socketFactory: sockets that connect to the address the harness names for a host. */
    public static class Resolving extends SocketFactory {
        final Map<String, String> addresses = new HashMap<>();

        /** pgjdbc passes socketFactoryArg: "host=address;host=address" ("=address": every host). */
        public Resolving(String arg) {
            for (String pair : arg.split(";")) {
                int eq = pair.indexOf('=');
                if (eq >= 0) addresses.put(pair.substring(0, eq), pair.substring(eq + 1));
            }
        }

        Socket socket() {
            return new Socket() {
                @Override
                public void connect(SocketAddress to, int timeout) throws IOException {
                    InetSocketAddress a = (InetSocketAddress) to;
                    String address = addresses.getOrDefault(a.getHostString(), addresses.get(""));
                    super.connect(address == null ? a : new InetSocketAddress(address, a.getPort()), timeout);
                }
            };
        }

        @Override public Socket createSocket() { return socket(); }
        @Override public Socket createSocket(String h, int p) throws IOException {
            Socket s = socket(); s.connect(new InetSocketAddress(h, p)); return s;
        }
        @Override public Socket createSocket(String h, int p, java.net.InetAddress l, int lp) throws IOException {
            return createSocket(h, p);
        }
        @Override public Socket createSocket(java.net.InetAddress h, int p) throws IOException {
            return createSocket(h.getHostAddress(), p);
        }
        @Override public Socket createSocket(java.net.InetAddress h, int p, java.net.InetAddress l, int lp) throws IOException {
            return createSocket(h.getHostAddress(), p);
        }
    }

    static String enc(String s) {
        return URLEncoder.encode(s, StandardCharsets.UTF_8);
    }

    static Map<String, Object> attempt(Map<String, Object> request) {
        Map<String, String> p = new LinkedHashMap<>();
        for (Object pair : (List<?>) request.get("params")) {
            List<?> kv = (List<?>) pair;
            p.put((String) kv.get(0), (String) kv.get(1));
        }
        String host = p.remove("host");
        String port = p.remove("port");
        String dbname = p.remove("dbname");
        String hostaddr = p.remove("hostaddr");
        if (host == null || host.startsWith("/")) {
            return failed("pgjdbc connects over TCP only; a Unix socket needs a third-party socketFactory", null, "unsupported");
        }
        String[] hosts = host.split(",", -1);
        String[] addrs = hostaddr == null ? new String[0] : hostaddr.split(",", -1);
        if (addrs.length > 1 && addrs.length != hosts.length) {
            return failed("pgjdbc has no hostaddr option: a host list with its own address list cannot be expressed", null, "unsupported");
        }
        StringBuilder url = new StringBuilder("jdbc:postgresql://");
        StringBuilder map = new StringBuilder();
        for (int i = 0; i < hosts.length; i++) {
            String h = hosts[i];
            if (i > 0) url.append(',');
            url.append(h.contains(":") ? "[" + h + "]" : h);
            if (port != null) url.append(':').append(port);
            if (addrs.length > 1) map.append(h).append('=').append(addrs[i]).append(';');
        }
        if (addrs.length == 1) map.append('=').append(addrs[0]);
        url.append('/').append(dbname == null ? "" : enc(dbname));
        List<String> query = new ArrayList<>();
        for (Map.Entry<String, String> e : p.entrySet()) {
            query.add(NAMES.getOrDefault(e.getKey(), e.getKey()) + "=" + enc(e.getValue()));
        }
        if (map.length() > 0) {
            query.add("socketFactory=" + enc(Resolving.class.getName()));
            query.add("socketFactoryArg=" + enc(map.toString()));
        }
        url.append('?').append(String.join("&", query));
        try (Connection conn = DriverManager.getConnection(url.toString())) {
            SSLSocket ssl = sslSocket(conn);
            List<String> columns = new ArrayList<>();
            try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery((String) request.get("session_query"))) {
                if (rs.next()) {
                    for (int i = 1; i <= rs.getMetaData().getColumnCount(); i++) {
                        String v = rs.getString(i);
                        columns.add(v == null ? "" : v);
                    }
                }
            }
            Map<String, Object> c = new LinkedHashMap<>();
            c.put("encrypted", ssl != null);
            c.put("tls_version", ssl != null ? ssl.getSession().getProtocol() : "");
            c.put("cipher", ssl != null ? ssl.getSession().getCipherSuite() : "");
            c.put("columns", columns);
            return Map.of("connected", c);
        } catch (SQLException e) {
            return failed(chain(e), e.getSQLState(), null);
        } catch (Exception e) {
            return failed("shim: " + chain(e), null, null);
        }
    }

    /** The exception and its causes, as a stack trace shows them ("... Caused by: ..."). */
    static String chain(Throwable e) {
        StringBuilder s = new StringBuilder(e.toString());
        for (Throwable c = e.getCause(); c != null && c != c.getCause(); c = c.getCause()) {
            s.append(" / Caused by: ").append(c);
        }
        return s.toString();
    }

    /** The connection's socket (pgjdbc keeps it in its query executor's PGStream). */
    static SSLSocket sslSocket(Connection conn) throws Exception {
        Object executor = conn.unwrap(org.postgresql.core.BaseConnection.class).getQueryExecutor();
        Class<?> c = executor.getClass();
        while (c != null) {
            try {
                Field f = c.getDeclaredField("pgStream");
                f.setAccessible(true);
                Socket s = ((org.postgresql.core.PGStream) f.get(executor)).getSocket();
                return s instanceof SSLSocket ? (SSLSocket) s : null;
            } catch (NoSuchFieldException e) {
                c = c.getSuperclass();
            }
        }
        throw new IllegalStateException("no pgStream in " + executor.getClass());
    }

    static Map<String, Object> failed(String message, String code, String cls) {
        Map<String, Object> f = new LinkedHashMap<>();
        f.put("message", message);
        if (code != null) f.put("code", code);
        if (cls != null) f.put("class", cls);
        return Map.of("failed", f);
    }

    static void send(Map<String, Object> message) {
        String line = JSON.toJson(message);
        synchronized (out) {
            out.print(line + "\n");
            out.flush();
        }
    }

    public static void main(String[] args) throws Exception {
        // The protocol keeps fd 1; System.out goes to stderr so nothing else writes a reply line.
        out = new PrintStream(new FileOutputStream(FileDescriptor.out), false, StandardCharsets.UTF_8);
        System.setOut(System.err);
        Class.forName("org.postgresql.Driver");
        List<String> options = new ArrayList<>();
        for (org.postgresql.PGProperty prop : org.postgresql.PGProperty.values()) options.add(prop.getName());
        Map<String, Object> hello = new LinkedHashMap<>();
        hello.put("type", "hello");
        hello.put("protocol", PROTOCOL);
        hello.put("name", "pgjdbc");
        hello.put("version", org.postgresql.util.DriverInfo.DRIVER_VERSION);
        hello.put("tls_library", "jsse");
        hello.put("tls_version", System.getProperty("java.version"));
        hello.put("options", options);
        send(hello);
        ExecutorService pool = Executors.newCachedThreadPool(r -> {
            Thread t = new Thread(r);
            t.setDaemon(true);
            return t;
        });
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        String line;
        while ((line = in.readLine()) != null) {
            @SuppressWarnings("unchecked")
            Map<String, Object> request = (Map<String, Object>) JSON.fromJson(line, Map.class);
            if (!"request".equals(request.get("type"))) continue;
            pool.submit(() -> {
                Map<String, Object> result;
                try {
                    result = attempt(request);
                } catch (Throwable e) {
                    result = failed("shim: " + chain(e), null, null);
                }
                Map<String, Object> reply = new LinkedHashMap<>();
                reply.put("type", "reply");
                reply.put("id", request.get("id"));
                reply.put("result", result);
                send(reply);
            });
        }
        System.exit(0);
    }
}
