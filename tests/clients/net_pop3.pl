# Perl's Net::POP3 (core libnet): login, list, get (compared with the stored
# bytes), uidl, quit. Settings come from the same environment variables as
# the Python scripts (see pop3_test_support.py); exits 1 on a mismatch.
use strict;
use warnings;
use Net::POP3;

my $host = $ENV{POP3_HOST};
my $port = $ENV{POP3_PORT};
my $user = $ENV{POP3_USER};
my $password = $ENV{POP3_PASSWORD};
my $dir = $ENV{POP3_EXPECT_DIR};

sub fail { print STDERR "FAIL: @_\n"; exit 1; }

# Net::POP3 hands back lines with CRLF turned into "\n" and dots un-stuffed.
sub expected_text {
    my ($n) = @_;
    open(my $fh, '<:raw', "$dir/$n") or fail("cannot read $dir/$n: $!");
    local $/;
    my $raw = <$fh> // '';
    close $fh;
    my $wire = $raw;
    $wire =~ s/(?<!\r)\n/\r\n/g;
    $wire .= "\r\n" if length($raw) && $raw !~ /\n\z/;
    my $text = $wire;
    $text =~ s/\r\n/\n/g;
    return ($text, length $wire);
}

opendir(my $dh, $dir) or fail("cannot list $dir: $!");
my $stored = grep { /^\d+$/ } readdir($dh);
closedir $dh;

my $pop = Net::POP3->new($host, Port => $port, Timeout => 30)
    or fail("cannot connect: $@");
my $count = $pop->login($user, $password);
defined $count or fail("login failed: " . $pop->message);
$count == $stored or fail("login reports $count messages, $stored stored");

my $sizes = $pop->list or fail("LIST failed: " . $pop->message);
my $uidls = $pop->uidl or fail("UIDL failed: " . $pop->message);
for my $n (1 .. $stored) {
    my ($want, $wire_size) = expected_text($n);
    $sizes->{$n} == $wire_size or fail("LIST $n says $sizes->{$n}, expected $wire_size");
    defined $uidls->{$n} or fail("UIDL lacks message $n");
    my $lines = $pop->get($n) or fail("RETR $n failed: " . $pop->message);
    my $got = join('', @$lines);
    $got eq $want or fail("RETR $n differs: got " . length($got) . " bytes, expected " . length($want));
    print "message $n: $wire_size octets match\n";
}
$pop->quit or fail("QUIT failed");
print "Net::POP3: OK\n";
