// One IIS site with client-certificate authentication, from TypeScript.
import * as fs from "fs";
import * as path from "path";

import * as pulumi from "@pulumi/pulumi";

import { ClientCertSite } from "./clientCertSite";

const config = new pulumi.Config();
const pkiDir = path.resolve(config.require("pkiDir"));
const pem = (name: string) => fs.readFileSync(path.join(pkiDir, name), "utf8");

const shop = new ClientCertSite("shop", {
    connection: {
        endpoint: config.require("hostEndpoint"),
        transport: "basic",
        username: config.require("hostUsername"),
        password: config.requireSecret("hostPassword"),
        caBundle: config.require("hostCaBundle"),
    },
    site: "shop",
    https: {
        // Base64 text of the PFX (an absolute path works too: read where Pulumi runs).
        pfx: fs.readFileSync(path.join(pkiDir, "shop.pfx")).toString("base64"),
        password: config.requireSecret("pfxPassword"),
    },
    trustedRoots: [pem("ca.pem")],
    users: [{ name: "shop-alice", password: config.requireSecret("alicePassword") }],
    oneToOne: [{ certificate: pem("alice.pem"), user: "shop-alice" }],
});

export const url = shop.httpsUrl;
export const serverThumbprint = shop.serverThumbprint;
export const mappedUsers = shop.mappedUsers;
