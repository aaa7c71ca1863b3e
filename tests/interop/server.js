// A plant that is not asyncua: a node-opcua server publishing tb_dy tag names from a scripted model.
//
// Usage: node server.js CONFIG.json   (written by tests/interop/test_node_opcua_server.py)
//   {"port", "user", "password", "pkiDir", "speed",
//    "tags": [{"tag", "value", "low", "high", "unit", "noise", "writable", "stampLagH", "freezeAtH"}],
//    "steps": [{"tag", "atH", "factor" | "value" | "status"}]}
// The address space follows docs/opcua.md where the twin relies on it: namespace urn:sxtwin:plant,
// the tag as the node id's string (ns=<i>;s=FIC-102.PV), Plant/PlantHours, Plant/RunEpoch,
// Plant/PlantTime and Plant/Speed, source timestamps in plant time (RunEpoch + plant hours),
// EURange and EngineeringUnits properties. The scripted model: every tag holds its value (the
// twin's design steady state, from the test) times (1 + noise x N(0, 1)), times `factor` after
// `atH` plant hours for the scripted steps, clamped to [low, high]. Faults for the twin's ingestion
// checks: a step's `value` (a number, or "NaN") is published as it is, unclamped; a step's `status`
// (a StatusCodes name, e.g. "BadOutOfService") replaces Good; a tag's `stampLagH` stamps its values
// that many plant hours in the past (stale on arrival); a tag's `freezeAtH` stops its updates from
// that plant hour on (it goes stale). User-name tokens (one user) on a None and a
// Basic256Sha256 SignAndEncrypt endpoint; no anonymous sessions; setpoints (writable tags) accept
// numbers from the user. Prints "READY <port>" when listening; SIGTERM stops it.
"use strict";

const fs = require("fs");
const path = require("path");
const { OPCUAServer } = require("node-opcua-server");
const { NamespaceOptions } = require("node-opcua-address-space");
const { OPCUACertificateManager } = require("node-opcua-certificate-manager");
const { DataType, Variant } = require("node-opcua-variant");
const { DataValue } = require("node-opcua-data-value");
const { StatusCodes } = require("node-opcua-status-code");
const { MessageSecurityMode, SecurityPolicy } = require("node-opcua-secure-channel");
const { makeEUInformation } = require("node-opcua-data-access");

// UNECE Rec. 20 codes, as docs/opcua.md
const UNITS = {
    "L/h": ["E32", "L/h", "litre per hour"],
    "mol/L": ["C38", "mol/L", "mole per litre"],
    "g/L": ["GL", "g/L", "gram per litre"],
    degC: ["CEL", "°C", "degree Celsius"],
    "1": ["C62", "1", "one"],
    "%": ["P1", "%", "percent"],
};

function gauss() {
    // Box-Muller
    const u = 1 - Math.random();
    const v = Math.random();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

async function main() {
    const config = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
    const serverCertificateManager = new OPCUACertificateManager({
        rootFolder: path.join(config.pkiDir, "server"),
        automaticallyAcceptUnknownCertificate: true, // the test starts the only client
    });
    await serverCertificateManager.initialize();
    const server = new OPCUAServer({
        port: config.port,
        hostname: "127.0.0.1",
        resourcePath: "/sxtwin/plant",
        allowAnonymous: false,
        securityModes: [MessageSecurityMode.None, MessageSecurityMode.SignAndEncrypt],
        securityPolicies: [SecurityPolicy.None, SecurityPolicy.Basic256Sha256],
        serverCertificateManager,
        userManager: {
            isValidUser: (userName, password) => userName === config.user && password === config.password,
        },
        buildInfo: { productName: "sxtwin interop plant (node-opcua)", manufacturerName: "sxtwin tests" },
    });
    await server.initialize();
    const addressSpace = server.engine.addressSpace;
    const ns = addressSpace.registerNamespace("urn:sxtwin:plant");
    // child nodes of a string node id are named <parent>/<browse name> (FIC-102.PV/EURange), as in
    // the sxtwin plant (docs/opcua.md), instead of node-opcua's default <parent>-<browse name>
    NamespaceOptions.nodeIdNameSeparator = "/";
    const objects = addressSpace.rootFolder.objects;
    const plant = ns.addObject({ organizedBy: objects, browseName: "Plant", nodeId: "s=Plant" });
    const epoch = new Date(Math.floor(Date.now() / 1000) * 1000);
    const t0 = Date.now();
    const speed = config.speed || 3600;
    const hours = () => ((Date.now() - t0) / 1000) * (speed / 3600);
    const plantTime = () => new Date(epoch.getTime() + hours() * 3600 * 1000);

    const clockVars = {
        PlantHours: [DataType.Double, () => hours()],
        PlantTime: [DataType.DateTime, () => plantTime()],
        RunEpoch: [DataType.DateTime, () => epoch],
        Speed: [DataType.Double, () => speed],
    };
    for (const [name, [dataType, get]] of Object.entries(clockVars)) {
        ns.addVariable({
            componentOf: plant,
            browseName: name,
            nodeId: `s=Plant/${name}`,
            dataType,
            minimumSamplingInterval: 100,
            value: {
                timestamped_get: () =>
                    new DataValue({
                        value: new Variant({ dataType, value: get() }),
                        statusCode: StatusCodes.Good,
                        sourceTimestamp: plantTime(),
                        serverTimestamp: new Date(),
                    }),
            },
        });
    }

    const folder = ns.addObject({ componentOf: plant, browseName: "TbDy", nodeId: "s=Plant/TbDy" });
    const state = {};
    for (const t of config.tags) {
        const [code, symbol, name] = UNITS[t.unit] || UNITS["1"];
        const variable = ns.addAnalogDataItem({
            componentOf: folder,
            browseName: t.tag,
            nodeId: `s=${t.tag}`,
            dataType: "Double",
            engineeringUnitsRange: { low: t.low, high: t.high },
            engineeringUnits: makeEUInformation(code, symbol, name),
            minimumSamplingInterval: 100,
            accessLevel: t.writable ? "CurrentRead | CurrentWrite" : "CurrentRead",
            userAccessLevel: t.writable ? "CurrentRead | CurrentWrite" : "CurrentRead",
        });
        state[t.tag] = { spec: t, variable, value: t.value };
        if (t.writable) {
            variable.bindVariable(
                {
                    timestamped_get: () =>
                        new DataValue({
                            value: new Variant({ dataType: DataType.Double, value: state[t.tag].value }),
                            statusCode: StatusCodes.Good,
                            sourceTimestamp: plantTime(),
                            serverTimestamp: new Date(),
                        }),
                    set: (variant) => {
                        const v = Number(variant.value);
                        if (!Number.isFinite(v) || v < t.low || v > t.high) {
                            return StatusCodes.BadOutOfRange;
                        }
                        state[t.tag].value = v;
                        return StatusCodes.Good;
                    },
                },
                true,
            );
        }
    }

    function publish() {
        const h = hours();
        const now = plantTime();
        for (const s of Object.values(state)) {
            if (s.spec.writable || (s.published && s.spec.freezeAtH !== undefined && h >= s.spec.freezeAtH)) {
                continue;
            }
            let v = s.spec.value;
            let fixed = null;
            let status = StatusCodes.Good;
            for (const step of config.steps || []) {
                if (step.tag !== s.spec.tag || h < step.atH) {
                    continue;
                }
                if (step.factor !== undefined) {
                    v *= step.factor;
                }
                if (step.value !== undefined) {
                    fixed = Number(step.value); // "NaN" -> NaN
                }
                if (step.status !== undefined) {
                    status = StatusCodes[step.status];
                }
            }
            v *= 1 + (s.spec.noise || 0) * gauss();
            v = fixed !== null ? fixed : Math.min(Math.max(v, s.spec.low), s.spec.high);
            const stamp = new Date(now.getTime() - (s.spec.stampLagH || 0) * 3600 * 1000);
            s.variable.setValueFromSource(new Variant({ dataType: DataType.Double, value: v }), status, stamp);
            s.published = true;
        }
    }
    publish();
    const timer = setInterval(publish, 250);

    await server.start();
    console.log(`READY ${server.endpoints[0].port}`);
    const stop = async () => {
        clearInterval(timer);
        await server.shutdown(100);
        process.exit(0);
    };
    process.on("SIGTERM", stop);
    process.on("SIGINT", stop);
}

main().catch((err) => {
    console.error(err);
    process.exit(1);
});
