// An OPC UA server we did not write with a deep folder tree, for `scadawatch browse opcua`.
// usage: node tree.js <port> <pki-dir> <areas>
// (prints "ready <endpoint> <variables>" once listening)
// Objects/Plant/Area<a>/Line<l>/Station<s>/Device<d>/<variable>: 5 lines x 5 stations x 4
// devices per area, each device with analog items (EngineeringUnits + EURange), a double
// without units, a boolean, an int32 and a string; a folder `Flat` holding 1,200 variables at
// once (more references than one Browse answer carries: continuation points); a folder
// `Favorites` organizing variables that also sit in the tree (reached twice, listed once).
// Operation limits are small (MaxNodesPerBrowse 100, MaxNodesPerRead 250, 5 browse
// continuation points) so that a client ignoring them gets BadTooManyOperations.
// Users: anonymous, or "blind" (password "blind") whose every Browse of a node is answered
// BadUserAccessDenied, as by a server whose role for that user has no Browse permission.
const path = require("path");
const {
    OPCUAServer, OPCUACertificateManager, DataType, StatusCodes, Variant, BrowseResult, standardUnits,
} = require("node-opcua");

const ANALOG = [
    // name, unit, low, high
    ["Pressure", standardUnits.bar, 0, 16],
    ["Flow", standardUnits.cubic_metre_per_hour, 0, 500],
    ["Level", standardUnits.metre, 0, 8],
    ["Temperature", standardUnits.degree_celsius, -20, 80],
];

async function main() {
    const port = Number(process.argv[2]);
    const serverCertificateManager = new OPCUACertificateManager({
        rootFolder: path.resolve(process.argv[3]), automaticallyAcceptUnknownCertificate: false,
    });
    await serverCertificateManager.initialize();
    const areas = Number(process.argv[4]);
    const server = new OPCUAServer({
        port, resourcePath: "/tree", serverCertificateManager, allowAnonymous: true,
        userManager: { isValidUser: (user, password) => user === "blind" && password === "blind" },
        serverCapabilities: {
            maxBrowseContinuationPoints: 5,
            operationLimits: { maxNodesPerBrowse: 100, maxNodesPerRead: 250 },
        },
    });
    await server.initialize();
    const addressSpace = server.engine.addressSpace;
    const ns = addressSpace.registerNamespace("urn:scadawatch:test:tree");
    const plant = ns.addFolder(addressSpace.rootFolder.objects, { browseName: "Plant" });
    const favorites = ns.addFolder(addressSpace.rootFolder.objects, { browseName: "Favorites",
        nodeId: "s=Favorites" });
    let variables = 0;
    const double = (parent, nodeId, name, value) => {
        variables += 1;
        return ns.addVariable({ componentOf: parent, nodeId, browseName: name, dataType: "Double",
            value: new Variant({ dataType: DataType.Double, value }) });
    };
    for (let a = 1; a <= areas; a++) {
        const area = ns.addFolder(plant, { browseName: `Area${a}` });
        for (let l = 1; l <= 5; l++) {
            const line = ns.addFolder(area, { browseName: `Line${l}` });
            for (let s = 1; s <= 5; s++) {
                const station = ns.addFolder(line, { browseName: `Station${s}` });
                for (let d = 1; d <= 4; d++) {
                    const device = ns.addObject({ organizedBy: station, browseName: `Device${d}` });
                    const id = `A${a}.L${l}.S${s}.D${d}`;
                    for (const [name, unit, low, high] of ANALOG) {
                        variables += 1;
                        const item = ns.addAnalogDataItem({ componentOf: device, nodeId: `s=${id}.${name}`,
                            browseName: name, dataType: "Double", engineeringUnits: unit,
                            engineeringUnitsRange: { low, high },
                            value: new Variant({ dataType: DataType.Double, value: (low + high) / 2 }) });
                        if (l === 1 && s === 1 && d === 1 && name === "Flow") {
                            favorites.addReference({ referenceType: "Organizes", nodeId: item.nodeId });
                        }
                    }
                    double(device, `s=${id}.Speed`, "Speed", 1450);
                    variables += 3;
                    ns.addVariable({ componentOf: device, nodeId: `s=${id}.Running`, browseName: "Running",
                        dataType: "Boolean", value: new Variant({ dataType: DataType.Boolean, value: true }) });
                    ns.addVariable({ componentOf: device, nodeId: `s=${id}.Starts`, browseName: "Starts",
                        dataType: "Int32", value: new Variant({ dataType: DataType.Int32, value: 7 }) });
                    ns.addVariable({ componentOf: device, nodeId: `s=${id}.SerialNumber`,
                        browseName: "SerialNumber", dataType: "String",
                        value: new Variant({ dataType: DataType.String, value: id }) });
                }
            }
        }
    }
    const flat = ns.addFolder(addressSpace.rootFolder.objects, { browseName: "Flat" });
    for (let i = 0; i < 1200; i++) {
        double(flat, `s=Flat.${i}`, `Value ${i}`, i);
    }
    const browse = addressSpace.browseSingleNode.bind(addressSpace);
    addressSpace.browseSingleNode = (nodeId, description, context) => {
        const token = context && context.session && context.session.userIdentityToken;
        return token && token.userName === "blind"
            ? new BrowseResult({ statusCode: StatusCodes.BadUserAccessDenied })
            : browse(nodeId, description, context);
    };
    await server.start();
    console.log(`ready ${server.getEndpointUrl()} ${variables}`);
    const stop = async () => { await server.shutdown(0); process.exit(0); };
    process.on("SIGTERM", stop);
    process.on("SIGINT", stop);
}

main().catch((err) => { console.error(err); process.exit(1); });
