"""One distribution for every part of vmdiag; extras choose what a role needs.

    pip install .            guest agent only (Python + psutil)
    pip install .[host]      + VDSM hook and relay (libvirt-python, aiohttp)
    pip install .[engine]    + engine service (aiohttp, jinja2, ovirtsdk4, psycopg)
    pip install .[all,test]  everything, plus the test tools
"""

from setuptools import find_packages, setup

VERSION = "0.1.0"
with open("README.md", encoding="utf-8") as _f:
    README = _f.read()

HOST = ["libvirt-python>=7.0", "aiohttp>=3.7", "cryptography>=3.4", "prometheus-client>=0.9",
        # optional at run time (diag_protocol.framing.use_fast_json, vdsm_hooks/relay/plain.py):
        # same results, slower without
        "orjson>=3.6", "msgspec>=0.18"]
ENGINE = ["aiohttp>=3.7", "jinja2>=2.11", "ovirt-engine-sdk-python>=4.4",
          "psycopg[binary]>=3.1", "psycopg-pool>=3.1", "prometheus-client>=0.9",
          # optional at run time (engine_plugin/fastjson.py): same results, slower without
          "orjson>=3.6", "msgspec>=0.18"]
# Test tools are bounded above: a new release of a linter or of Hypothesis must not turn a clean
# checkout red. hypothesis-jsonschema 0.23 draws objects through Hypothesis internals that
# 6.170.10 removed (`many.more`), so Hypothesis stays below that until it catches up.
TEST = ["pytest>=7,<10", "pytest-asyncio>=0.21,<2", "pytest-timeout<3",
        "hypothesis>=6.100,<6.170.10", "hypothesis-jsonschema>=0.23,<0.24", "jsonschema>=4,<5",
        "trustme>=1.0,<2", "cryptography", "selenium>=4.10,<5", "ruff>=0.6,<0.18",
        "mypy>=1.8,<3", "vermin>=1.6,<2"]

setup(
    name="vmdiag",
    version=VERSION,
    description="Guest OS diagnostics for oVirt/KVM virtual machines, inside the oVirt console",
    long_description=README,
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=find_packages(include=["diag_protocol*", "guest_agent*", "vdsm_hooks*",
                                    "engine_plugin*"]),
    include_package_data=True,
    package_data={
        "vdsm_hooks": ["hooks/*/50_vmdiag"],
        "engine_plugin": ["ui/templates/*", "ui/templates/**/*", "ui/static/*",
                          "ui/static/**/*", "ui/plugin/*", "ui/plugin/**/*",
                          "storage/migrations/*", "storage/migrations/**/*"],
    },
    install_requires=["psutil>=5.8"],
    extras_require={
        "host": HOST,
        "engine": ENGINE,
        "test": TEST,
        "all": sorted(set(HOST + ENGINE)),
    },
    entry_points={
        "console_scripts": [
            "vmdiag-agent = guest_agent.cli:main",
            "vmdiag-relay = vdsm_hooks.relay.cli:main",
            "vmdiag-engine = engine_plugin.service.cli:main",
        ],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Operating System :: POSIX :: Linux",
        "Topic :: System :: Monitoring",
    ],
)
