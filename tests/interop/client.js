// An independent OPC UA stack (node-opcua) as a client of the sxtwin simulated plant.
//
// Usage: node client.js CONFIG.json   (written by tests/interop/test_node_opcua.py)
//   {"url", "user", "password", "certificateFile", "privateKeyFile", "applicationUri", "pkiDir",
//    "setpoint": {"tag", "value", "outOfRange"}}
// Connects over Basic256Sha256 SignAndEncrypt as a user, browses the plant, reads values with
// their units and ranges, subscribes to a flow, writes a setpoint (and an out-of-range one), and
// prints one JSON object on stdout.
"use strict";

const fs = require("fs");
const {
    OPCUAClient,
    MessageSecurityMode,
    SecurityPolicy,
    AttributeIds,
    UserTokenType,
    BrowseDirection,
    NodeClass,
    ClientSubscription,
    ClientMonitoredItem,
    TimestampsToReturn,
    DataType,
} = require("node-opcua-client");
const { OPCUACertificateManager } = require("node-opcua-certificate-manager");

async function browseTree(session, nodeId, depth, out) {
    const result = await session.browse({
        nodeId,
        browseDirection: BrowseDirection.Forward,
        referenceTypeId: "HierarchicalReferences",
        includeSubtypes: true,
        nodeClassMask: 0,
        resultMask: 63,
    });
    for (const ref of result.references || []) {
        const id = ref.nodeId.toString();
        if (ref.nodeClass === NodeClass.Variable) {
            out.push(id);
        }
        if (depth > 0 && ref.nodeClass === NodeClass.Object) {
            await browseTree(session, ref.nodeId, depth - 1, out);
        }
    }
}

async function main() {
    const config = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
    const certificateManager = new OPCUACertificateManager({
        rootFolder: config.pkiDir,
        automaticallyAcceptUnknownCertificate: true, // the test trusts the server it started
    });
    const client = OPCUAClient.create({
        applicationName: "sxtwin interop node-opcua",
        applicationUri: config.applicationUri,
        securityMode: MessageSecurityMode.SignAndEncrypt,
        securityPolicy: SecurityPolicy.Basic256Sha256,
        certificateFile: config.certificateFile,
        privateKeyFile: config.privateKeyFile,
        clientCertificateManager: certificateManager,
        endpointMustExist: false,
        connectionStrategy: { maxRetry: 2, initialDelay: 200, maxDelay: 1000 },
    });
    const out = { stack: "node-opcua", connected: false };
    await client.connect(config.url);
    const session = await client.createSession({
        type: UserTokenType.UserName,
        userName: config.user,
        password: config.password,
    });
    out.connected = true;
    const namespaces = await session.readNamespaceArray();
    const ns = namespaces.indexOf("urn:sxtwin:plant");
    out.namespaceIndex = ns;

    const variables = [];
    await browseTree(session, `ns=${ns};s=Plant`, 5, variables);
    out.browsed = variables;

    const tags = config.readTags;
    const values = await session.read(tags.map((t) => ({ nodeId: `ns=${ns};s=${t}`, attributeId: AttributeIds.Value })));
    const units = await session.read(
        tags.map((t) => ({ nodeId: `ns=${ns};s=${t}/EngineeringUnits`, attributeId: AttributeIds.Value }))
    );
    const ranges = await session.read(tags.map((t) => ({ nodeId: `ns=${ns};s=${t}/EURange`, attributeId: AttributeIds.Value })));
    out.values = {};
    tags.forEach((t, i) => {
        const eu = units[i].value.value;
        const rng = ranges[i].value.value;
        out.values[t] = {
            value: values[i].value.value,
            status: values[i].statusCode.name,
            sourceTimestamp: values[i].sourceTimestamp ? values[i].sourceTimestamp.toISOString() : null,
            unitId: eu ? eu.unitId : null,
            unit: eu ? eu.displayName.text : null,
            range: rng ? [rng.low, rng.high] : null,
        };
    });

    const subscription = ClientSubscription.create(session, {
        requestedPublishingInterval: 100,
        requestedLifetimeCount: 600,
        requestedMaxKeepAliveCount: 20,
        maxNotificationsPerPublish: 100,
        publishingEnabled: true,
        priority: 10,
    });
    const changes = [];
    const item = ClientMonitoredItem.create(
        subscription,
        { nodeId: `ns=${ns};s=${config.subscribeTag}`, attributeId: AttributeIds.Value },
        { samplingInterval: 100, discardOldest: true, queueSize: 10 },
        TimestampsToReturn.Both
    );
    item.on("changed", (dv) => changes.push(dv.value.value));
    const started = Date.now();
    while (changes.length < 3 && Date.now() - started < 20000) {
        await new Promise((resolve) => setTimeout(resolve, 100));
    }
    out.notifications = changes.length;
    await subscription.terminate();

    const sp = config.setpoint;
    const write = async (value) =>
        (
            await session.write({
                nodeId: `ns=${ns};s=${sp.tag}`,
                attributeId: AttributeIds.Value,
                value: { value: { dataType: DataType.Double, value } },
            })
        ).name;
    out.write = await write(sp.value);
    out.writeOutOfRange = await write(sp.outOfRange);
    const after = await session.read({ nodeId: `ns=${ns};s=${sp.tag}`, attributeId: AttributeIds.Value });
    out.setpointAfter = after.value.value;

    await session.close();
    await client.disconnect();
    process.stdout.write("SXTWIN_RESULT " + JSON.stringify(out) + "\n");
}

main().catch((err) => {
    process.stdout.write(
        "SXTWIN_RESULT " + JSON.stringify({ stack: "node-opcua", error: String(err && err.message ? err.message : err) }) + "\n"
    );
    process.exit(1);
});
