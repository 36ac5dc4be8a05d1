# pgssl's attempt-protocol shim for `libpq:<build>` (docs/adding-a-stack.md): psql of a server
# build's image, run inside a container of that image. pgssl starts it with one exec per stack
# (harness/src/client/container_libpq.rs) and speaks to it over the exec's stdin and stdout.
#
# One process serves many attempts: a forked child per request runs psql and writes its reply,
# one whole line each, in whatever order the attempts end. Core Perl only (JSON::PP, POSIX,
# Fcntl, Encode, File::Temp): every image has perl, as postgresql-common needs it.

use strict;
use warnings;
use Encode qw(decode encode);
use Fcntl qw(:flock);
use File::Temp qw(tempfile);
use JSON::PP;
use POSIX ();

my $PROTOCOL = 1;
# Separates psql's output columns (a DN may contain `|` or `,`).
my $SEP = "\x1f";
# Ends \conninfo's output, so the session query's row is what follows it.
my $MARK = 'pgssl-row-follows';

# A process group of its own: pgssl kills the group, and with it the attempts in flight.
setpgrp(0, 0);
# Children are reaped by the kernel; each child puts the default back to wait for its psql.
$SIG{CHLD} = 'IGNORE';

my $json = JSON::PP->new->utf8->canonical;
# Forked children write replies; a lock file of this process keeps their lines whole.
my $lock_path = "/tmp/pgssl-libpq-shim-$$.lock";

sub send_line {
    my ($message) = @_;
    my $line = $json->encode($message) . "\n";
    open(my $lock, '>>', $lock_path) or die "$lock_path: $!";
    flock($lock, LOCK_EX) or die "flock: $!";
    my $at = 0;
    while ($at < length $line) {
        my $n = syswrite(STDOUT, $line, length($line) - $at, $at);
        die "stdout: $!" unless defined $n;
        $at += $n;
    }
    close $lock;
}

# `13.22-0+deb11u1` -> `13.22`; `1:3.0.17-1~deb12u2` -> `3.0.17`.
sub upstream {
    my ($v) = @_;
    $v =~ s/^[^:]*://;
    $v =~ s/[-+~].*//;
    return $v;
}

# The image's libpq and OpenSSL, as its packages name them.
sub versions {
    my ($libpq, $ssl) = ('', '');
    for (`dpkg-query -W -f '\${Package} \${Version}\\n' libpq5 'libssl*' 2>/dev/null`) {
        chomp;
        my ($package, $version) = split / /, $_, 2;
        next unless defined $version && length $version;
        $libpq = upstream($version) if $package eq 'libpq5' && !length $libpq;
        $ssl = upstream($version)
          if $package =~ /^libssl/ && $package !~ /-dev/ && !length $ssl;
    }
    return ($libpq, $ssl);
}

# One libpq connection string: key='value', quotes and backslashes escaped.
sub conninfo {
    my ($params) = @_;
    return join ' ', map {
        my ($k, $v) = @$_;
        $v =~ s/([\\'])/\\$1/g;
        "$k='$v'";
    } @$params;
}

# The client's view of the session from \conninfo: "SSL connection (protocol: TLSv1.3,
# cipher: ...)" up to PostgreSQL 17, a table of "SSL Protocol", "SSL Cipher" rows since 18.
sub tls_of {
    my (@lines) = @_;
    my ($version, $cipher) = ('', '');
    for (@lines) {
        if (/protocol: ([^,]+), cipher: ([^,)]+)/) {
            ($version, $cipher) = ($1, $2);
        }
        my ($name, $value) = split /$SEP/, $_, 2;
        next unless defined $value;
        $version = $value if $name eq 'SSL Protocol';
        $cipher = $value if $name eq 'SSL Cipher';
    }
    return ($version, $cipher);
}

sub attempt {
    my ($request) = @_;
    # psql's own bound ends just before pgssl's deadline: a timeout reply, not a restart.
    my $secs = ($request->{deadline_ms} - 500) / 1000;
    $secs = 0.5 if $secs < 0.5;
    my @cmd = (
        'timeout', '-k', '0.2', $secs, 'psql',
        # No psqlrc, unaligned tuples only, never prompt (no terminal is there to answer).
        '-X', '-A', '-t', '-q', '-w', '-F', $SEP,
        '-c', '\conninfo', '-c', "\\echo $MARK", '-c', $request->{session_query},
        '-d', conninfo($request->{params}),
    );
    @cmd = map { encode('UTF-8', "$_") } @cmd;
    # psql's stderr goes to a file with no name (a pipe for both would need a select loop).
    my ($err_fh, $err_path) = tempfile();
    unlink $err_path;
    my $pid = open(my $out_fh, '-|');
    die "fork: $!" unless defined $pid;
    if (!$pid) {
        # psql: stdin from nothing, stderr to the file, the case's environment added.
        open(STDIN, '<', '/dev/null');
        open(STDERR, '>&', $err_fh);
        $ENV{LC_ALL} = 'C';
        $ENV{$_->[0]} = $_->[1] for @{ $request->{env} || [] };
        exec { $cmd[0] } @cmd or POSIX::_exit(127);
    }
    my $out = do { local $/; <$out_fh> } // '';
    close $out_fh;
    my $code = $? >> 8;
    seek($err_fh, 0, 0);
    my $err = do { local $/; <$err_fh> } // '';
    $out = decode('UTF-8', $out);
    $err = decode('UTF-8', $err);
    if ($code == 0) {
        my ($before, $row) = split /^\Q$MARK\E\n/m, $out, 2;
        $row //= '';
        $row =~ s/\n+\z//;
        my ($version, $cipher) = tls_of(split /\n/, $before);
        return {
            connected => {
                encrypted => length($version) ? JSON::PP::true : JSON::PP::false,
                tls_version => $version,
                cipher => $cipher,
                columns => [ split /$SEP/, $row, -1 ],
            }
        };
    }
    if ($code == 124 || $code == 137) {
        return { failed => { message => 'psql ran out of time', class => 'timeout' } };
    }
    # "psql: error: " leads libpq's own message since PostgreSQL 12.
    $err =~ s/^\s+|\s+\z//g;
    $err =~ s/^psql: error: //;
    return { failed => { message => $err } };
}

my ($libpq, $ssl) = versions();
send_line({
    type => 'hello',
    protocol => $PROTOCOL,
    name => 'libpq',
    version => $libpq,
    tls_library => 'openssl',
    tls_version => $ssl,
    libpq_version => $libpq,
});

while (my $line = <STDIN>) {
    my $request = eval { $json->decode($line) };
    next unless ref $request eq 'HASH' && ($request->{type} // '') eq 'request';
    my $pid = fork();
    if (!defined $pid) {
        send_line({ type => 'reply', id => $request->{id},
                    result => { failed => { message => "shim: fork: $!" } } });
        next;
    }
    next if $pid;
    $SIG{CHLD} = 'DEFAULT';
    my $result = eval { attempt($request) }
      // { failed => { message => "shim: $@" } };
    send_line({ type => 'reply', id => $request->{id}, result => $result });
    POSIX::_exit(0);
}
unlink $lock_path;
