// An OPC UA server we did not write, for the gateway's interop tests.
// usage: node server.js <port> <pki-dir>   (prints "ready <endpoint>" once listening)
// Security None, Basic256Sha256 and Aes128_Sha256_RsaOaep (Sign, SignAndEncrypt); unknown client certificates are
// rejected (saved under <pki-dir>/rejected/) until moved to <pki-dir>/trusted/certs/.
// User "operator" with password "s3cret" or anonymous.
const path = require("path");
const {
    OPCUAServer, OPCUACertificateManager, SecurityPolicy, MessageSecurityMode,
    DataType, StatusCodes, Variant, DataValue,
} = require("node-opcua");

async function main() {
    const port = Number(process.argv[2]);
    const pki = path.resolve(process.argv[3]);
    const serverCertificateManager = new OPCUACertificateManager({
        rootFolder: pki, automaticallyAcceptUnknownCertificate: false,
    });
    await serverCertificateManager.initialize();
    const server = new OPCUAServer({
        port, resourcePath: "/node", serverCertificateManager,
        securityPolicies: [SecurityPolicy.None, SecurityPolicy.Basic256Sha256,
            SecurityPolicy.Aes128_Sha256_RsaOaep],
        securityModes: [MessageSecurityMode.None, MessageSecurityMode.Sign,
            MessageSecurityMode.SignAndEncrypt],
        userManager: { isValidUser: (user, password) => user === "operator" && password === "s3cret" },
        allowAnonymous: true,
    });
    await server.initialize();
    const addressSpace = server.engine.addressSpace;
    const ns = addressSpace.registerNamespace("urn:scadawatch:test:node");
    const folder = ns.addFolder(addressSpace.rootFolder.objects, { browseName: "Test" });
    const start = Date.now();
    const wave = () => Math.sin((Date.now() - start) / 1000);
    ns.addVariable({ componentOf: folder, nodeId: "s=wave", browseName: "wave", dataType: "Double",
        minimumSamplingInterval: 100,
        value: { get: () => new Variant({ dataType: DataType.Double, value: wave() }) } });
    ns.addVariable({ componentOf: folder, nodeId: "s=pump_on", browseName: "pump_on",
        dataType: "Boolean", value: new Variant({ dataType: DataType.Boolean, value: true }) });
    // An analog item with an engineering range, rising 1 unit (1 % of its range) a second:
    // for the percent deadband, which the server applies against EURange.
    ns.addAnalogDataItem({ componentOf: folder, nodeId: "s=level", browseName: "level",
        dataType: "Double", engineeringUnitsRange: { low: 0, high: 100 },
        minimumSamplingInterval: 100,
        value: { get: () => new Variant({ dataType: DataType.Double,
            value: ((Date.now() - start) / 1000) % 100 }) } });
    const broken = ns.addVariable({ componentOf: folder, nodeId: "s=broken", browseName: "broken",
        dataType: "Double" });
    broken.setValueFromSource(new Variant({ dataType: DataType.Double, value: 0 }),
        StatusCodes.BadSensorFailure);
    await server.start();
    console.log(`ready ${server.getEndpointUrl()}`);
    const stop = async () => { await server.shutdown(0); process.exit(0); };
    process.on("SIGTERM", stop);
    process.on("SIGINT", stop);
}

main().catch((err) => { console.error(err); process.exit(1); });
