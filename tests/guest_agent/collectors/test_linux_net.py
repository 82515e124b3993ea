"""Interfaces, routes, resolver and sockets parsed from the fixture trees."""

from guest_agent import platform

from .fakes import machine

EL9 = machine("el9")


def test_interfaces_link_state_speed_and_counters():
    links = {i["name"]: i for i in platform.interfaces(EL9)}
    assert sorted(links) == ["ens3", "eth0", "eth1", "lo"]
    eth0 = links["eth0"]
    assert eth0["up"] is True and eth0["mtu"] == 1500 and eth0["mac"] == "52:54:00:a1:b2:01"
    assert eth0["speed_mbps"] is None  # virtio reports -1
    assert eth0["rx_bytes"] == 123456789 and eth0["rx_dropped"] == 17
    assert links["eth1"]["up"] is False and links["eth1"]["speed_mbps"] is None
    assert links["ens3"]["speed_mbps"] == 10000
    assert links["lo"]["up"] is True  # operstate "unknown" but IFF_UP set


def test_addresses_with_prefix_lengths_and_no_scope_suffix():
    addrs = platform.addresses(EL9)
    assert addrs["eth0"] == [
        {"family": "inet", "address": "192.168.122.15", "prefixlen": 24},
        {"family": "inet", "address": "192.168.122.200", "prefixlen": 32},
        {"family": "inet6", "address": "fd00::15", "prefixlen": 64},
        {"family": "inet6", "address": "fe80::5054:ff:fea1:b201", "prefixlen": 64},
    ]
    assert addrs["eth1"] == []
    assert addrs["lo"][1] == {"family": "inet6", "address": "::1", "prefixlen": 128}


def test_routes_skip_reject_local_and_multicast():
    routes = platform.routes(EL9)
    assert routes == [
        {"destination": "0.0.0.0/0", "gateway": "192.168.122.1", "interface": "eth0",
         "metric": 100},
        {"destination": "0.0.0.0/0", "gateway": "10.0.0.1", "interface": "eth1", "metric": 200},
        {"destination": "192.168.122.0/24", "gateway": None, "interface": "eth0",
         "metric": 100},
        {"destination": "10.0.0.0/8", "gateway": None, "interface": "eth1", "metric": 200},
        {"destination": "fd00::/64", "gateway": None, "interface": "eth0", "metric": 100},
        {"destination": "fe80::/64", "gateway": None, "interface": "eth0", "metric": 256},
        {"destination": "::/0", "gateway": "fe80::1", "interface": "eth0", "metric": 100},
    ]


def test_default_gateway_prefers_ipv4_with_lowest_metric():
    assert platform.default_gateway(platform.routes(EL9)) == {
        "address": "192.168.122.1", "interface": "eth0"}
    v6_only = [r for r in platform.routes(EL9) if ":" in r["destination"]]
    assert platform.default_gateway(v6_only) == {"address": "fe80::1", "interface": "eth0"}
    assert platform.default_gateway([]) is None


def test_routes_of_the_ci_machine():
    routes = platform.routes(machine("debian12"))
    assert routes[0] == {"destination": "0.0.0.0/0", "gateway": "192.0.2.1",
                         "interface": "eth0", "metric": 0}
    assert {"destination": "::/0", "gateway": "fd00::1", "interface": "eth0",
            "metric": 1024} in routes


def test_resolv_conf_ignores_comments():
    assert platform.resolv_conf(EL9) == {
        "nameservers": ["192.168.122.1", "192.168.122.2"],
        "search": ["example.org", "lab.example.org"]}


def test_listening_sockets_tcp_listen_and_unconnected_udp():
    sockets = platform.listening_sockets(EL9)
    assert sockets == [
        {"proto": "tcp", "address": "0.0.0.0", "port": 22, "inode": 21000},
        {"proto": "tcp", "address": "127.0.0.1", "port": 5432, "inode": 22000},
        {"proto": "tcp6", "address": "::", "port": 22, "inode": 21001},
        {"proto": "udp", "address": "127.0.0.1", "port": 323, "inode": 23000},
        {"proto": "udp6", "address": "::1", "port": 323, "inode": 23001},
    ]


def test_socket_owners_from_fd_links():
    owners = platform.socket_owners(EL9, {21000, 21001, 22000, 23000, 23001, 99999})
    assert owners == {21000: 812, 21001: 812, 22000: 1234, 23000: 901, 23001: 901}
    assert platform.socket_owners(EL9, set()) == {}
